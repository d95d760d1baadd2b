// The official openai SDK for Node against chatsite's /v1, with tools: a call returned
// without streaming, the client's result sent back, then the same call streamed.
// Usage: node openai_tools.mjs BASE_URL API_KEY MODEL; prints one JSON object.
import OpenAI from "openai";

const [baseURL, apiKey, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city.",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
const messages = [{ role: "user", content: 'call=get_weather{"city":"Lima"}' }];

const first = await client.chat.completions.create({ model, messages, tools });
const asked = first.choices[0].message;
const answer = await client.chat.completions.create({
  model,
  tools,
  messages: [...messages, asked, { role: "tool", tool_call_id: asked.tool_calls[0].id, content: "fog" }],
});

const stream = await client.chat.completions.create({ model, messages, tools, stream: true });
const streamed = {};
let finish = null;
for await (const chunk of stream) {
  for (const delta of chunk.choices[0]?.delta?.tool_calls ?? []) {
    const call = (streamed[delta.index] ??= { name: "", arguments: "" });
    call.name += delta.function?.name ?? "";
    call.arguments += delta.function?.arguments ?? "";
  }
  finish = chunk.choices[0]?.finish_reason ?? finish;
}

console.log(JSON.stringify({
  finish: first.choices[0].finish_reason,
  calls: asked.tool_calls.map((c) => [c.function.name, JSON.parse(c.function.arguments)]),
  answer: answer.choices[0].message.content,
  streamed: Object.values(streamed).map((c) => [c.name, JSON.parse(c.arguments)]),
  streamedFinish: finish,
}));
