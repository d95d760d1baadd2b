"""Conversations and their replies: the models, the streaming core (live/, runs/,
llm/, services/) and the surfaces that show them (consumers, pages, the APIs)."""
