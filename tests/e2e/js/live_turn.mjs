// One Live text turn with the official @google/genai client (Node), changed only in base URL and token:
// prints {"text": ..., "turnComplete": bool} or {"error": ..., "code": n} on stdout. tests/e2e/test_live.py runs it.
import { GoogleGenAI, Modality } from "@google/genai";

const { EDGE_URL, TOKEN, MODEL, API_VERSION, PROMPT } = process.env;
const ai = new GoogleGenAI({ apiKey: TOKEN, httpOptions: { baseUrl: EDGE_URL, apiVersion: API_VERSION || "v1beta" } });
let text = "";
let finish;
const done = new Promise((resolve) => (finish = resolve));
try {
  const session = await ai.live.connect({
    model: MODEL,
    config: { responseModalities: [Modality.TEXT] },
    callbacks: {
      onmessage: (message) => {
        for (const part of message.serverContent?.modelTurn?.parts ?? []) text += part.text ?? "";
        if (message.serverContent?.turnComplete) finish({ text, turnComplete: true });
      },
      onerror: (event) => finish({ error: String(event.message ?? event) }),
      onclose: (event) => finish({ error: event.reason, code: event.code }),
    },
  });
  session.sendClientContent({ turns: [{ role: "user", parts: [{ text: PROMPT }] }], turnComplete: true });
  const result = await Promise.race([done, new Promise((r) => setTimeout(() => r({ error: "timeout" }), 5000))]);
  session.close();
  console.log(JSON.stringify(result));
} catch (error) {
  console.log(JSON.stringify({ error: String(error) }));
}
process.exit(0);
