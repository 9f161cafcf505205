// Live turns with the official @google/genai client (Node), changed only in base URL and token, one session per
// turn in one process: TURNS (default "text") names them, from "text", "audio" (AUDIO_MODEL, 0.5 s of silence
// then audioStreamEnd) and "tool" (a function call answered with sendToolResponse). Prints one JSON line on stdout:
// {turn: {"text": ..., "audio": [mimeType, ...], "toolCalls": [name, ...], "turnComplete": true}} or, for a turn that
// failed, {turn: {"error": ..., "code": n}}. tests/e2e/test_live.py runs it.
import { GoogleGenAI, Modality, Type } from "@google/genai";

const { EDGE_URL, TOKEN, MODEL, AUDIO_MODEL, API_VERSION, PROMPT } = process.env;
const ai = new GoogleGenAI({ apiKey: TOKEN, httpOptions: { baseUrl: EDGE_URL, apiVersion: API_VERSION || "v1beta" } });
const weather = {
  name: "get_weather",
  parameters: { type: Type.OBJECT, properties: { city: { type: Type.STRING } } },
};
const TURNS = {
  text: {
    model: MODEL,
    config: { responseModalities: [Modality.TEXT] },
    start: (session) =>
      session.sendClientContent({ turns: [{ role: "user", parts: [{ text: PROMPT }] }], turnComplete: true }),
  },
  audio: {
    model: AUDIO_MODEL,
    config: { responseModalities: [Modality.AUDIO] },
    start: (session) => {
      session.sendRealtimeInput({
        audio: { data: Buffer.alloc(16000).toString("base64"), mimeType: "audio/pcm;rate=16000" },
      });
      session.sendRealtimeInput({ audioStreamEnd: true });
    },
  },
  tool: {
    model: MODEL,
    config: { responseModalities: [Modality.TEXT], tools: [{ functionDeclarations: [weather] }] },
    start: (session) =>
      session.sendClientContent({ turns: [{ role: "user", parts: [{ text: "get weather" }] }], turnComplete: true }),
  },
};

async function run({ model, config, start }) {
  const seen = { text: "", audio: [], toolCalls: [] };
  let finish;
  let session;
  const done = new Promise((resolve) => (finish = resolve));
  session = await ai.live.connect({
    model,
    config,
    callbacks: {
      onmessage: (message) => {
        for (const part of message.serverContent?.modelTurn?.parts ?? []) {
          seen.text += part.text ?? "";
          if (part.inlineData?.data) seen.audio.push(part.inlineData.mimeType);
        }
        const calls = message.toolCall?.functionCalls ?? [];
        if (calls.length) {
          seen.toolCalls.push(...calls.map((call) => call.name));
          session.sendToolResponse({
            functionResponses: calls.map((call) => ({ id: call.id, name: call.name, response: { result: "sunny" } })),
          });
        }
        if (message.serverContent?.turnComplete) finish({ ...seen, turnComplete: true });
      },
      onerror: (event) => finish({ error: String(event.message ?? event) }),
      onclose: (event) => finish({ error: event.reason, code: event.code }),
    },
  });
  start(session);
  const result = await Promise.race([done, new Promise((r) => setTimeout(() => r({ error: "timeout" }), 5000))]);
  session.close();
  return result;
}

const results = {};
for (const name of (process.env.TURNS || "text").split(",")) {
  try {
    results[name] = await run(TURNS[name]);
  } catch (error) {
    results[name] = { error: String(error) };
  }
}
console.log(JSON.stringify(results));
process.exit(0);
