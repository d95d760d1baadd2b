"""Write paths, one module per idea: replies (send, regenerate, stop), conversations
(create, start, rename, delete), the sweeper (crash recovery), API keys."""
