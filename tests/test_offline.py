"""The built-in offline demo model."""

from langchain_core.messages import HumanMessage

from conversations.llm.offline import OfflineChatModel, compose_answer, tokenize


async def test_it_streams_many_chunks_asynchronously():
    model = OfflineChatModel(delay_ms=0)
    chunks = [chunk async for chunk in model.astream([HumanMessage("Hello, model")])]
    text_chunks = [c for c in chunks if c.content]
    assert len(text_chunks) > 50
    answer = "".join(c.content for c in chunks)
    assert answer == compose_answer([HumanMessage("Hello, model")])
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == len(text_chunks)


async def test_it_is_deterministic_and_reads_the_conversation():
    model = OfflineChatModel(delay_ms=0)
    first = (await model.ainvoke([HumanMessage("Tell me about whales")])).content
    again = (await model.ainvoke([HumanMessage("Tell me about whales")])).content
    other = (await model.ainvoke([HumanMessage("Something else entirely")])).content
    assert first == again
    assert first != other
    assert "“Tell me about whales”" in first


def test_its_answer_is_markdown_with_a_list_and_a_code_block():
    answer = compose_answer([HumanMessage("hi")])
    assert "\n- " in answer
    assert "```python\n" in answer
    assert "offline demo model" in answer
    assert "OPENAI_API_KEY" in answer  # it says how to connect a real model


def test_user_text_cannot_break_out_of_the_markdown():
    answer = compose_answer([HumanMessage("```\n<script>x</script> `tick`")])
    assert answer.count("```") == 2  # only its own code block


def test_tokens_rejoin_exactly():
    text = "  Hello,\n\nworld  ```code```\t end "
    assert "".join(tokenize(text)) == text
