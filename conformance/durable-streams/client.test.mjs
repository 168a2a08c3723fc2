// The official TypeScript client (@durable-streams/client) against Rill:
// create, append through an idempotent producer (pipelined batches, which
// can reach the server out of order), read live with SSE and long polls,
// fence a stale producer, close. Run by tests/durable_streams.rs with the
// conformance suite.
import { describe, expect, test } from "vitest";
import {
  DurableStream,
  IdempotentProducer,
  StaleEpochError,
  stream,
} from "@durable-streams/client";

const base = process.env.CONFORMANCE_TEST_URL;
let made = 0;
const url = (name) => `${base}/v1/stream/client-${name}-${Date.now()}-${made++}`;

/** Reads `url` live until `count` items came, or `ms` passed. */
async function readLive(streamUrl, live, count, ms) {
  const res = await stream({ url: streamUrl, offset: "-1", live });
  const items = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${live}: ${items.length} of ${count} items in ${ms} ms`)),
      ms,
    );
    const stop = res.subscribeJson(async (batch) => {
      items.push(...batch.items);
      if (items.length >= count) {
        clearTimeout(timer);
        stop();
        resolve();
      }
    });
  });
  return items;
}

describe("the official client", () => {
  for (const live of ["sse", "long-poll"]) {
    test(`an idempotent producer's messages arrive once each, in order (live ${live})`, async () => {
      const streamUrl = url(`producer-${live}`);
      const handle = await DurableStream.create({
        url: streamUrl,
        contentType: "application/json",
      });
      const count = 3000;
      // Readers start before the writes, so they follow them live.
      const reading = readLive(streamUrl, live, count, 20_000);
      const errors = [];
      const producer = new IdempotentProducer(handle, "client-test", {
        lingerMs: 1,
        maxBatchBytes: 2048,
        maxInFlight: 5,
        onError: (err) => errors.push(err),
      });
      for (let i = 0; i < count; i++) producer.append(JSON.stringify({ i }));
      await producer.flush();
      await producer.close();
      expect(errors).toEqual([]);
      const items = await reading;
      expect(items.map((item) => item.i)).toEqual([...Array(count).keys()]);

      // Read again from the start, catching up: the same, once each.
      const again = await (await stream({ url: streamUrl, offset: "-1", live: false })).json();
      expect(again.map((item) => item.i)).toEqual([...Array(count).keys()]);
    });
  }

  test("a producer of a newer epoch fences the older one", async () => {
    const handle = await DurableStream.create({ url: url("fence"), contentType: "text/plain" });
    const old = new IdempotentProducer(handle, "fenced", { epoch: 0, lingerMs: 0 });
    old.append("from epoch 0");
    await old.flush();
    const fresh = new IdempotentProducer(handle, "fenced", { epoch: 1, lingerMs: 0 });
    fresh.append("from epoch 1");
    await fresh.flush();
    const errors = [];
    const zombie = new IdempotentProducer(handle, "fenced", {
      epoch: 0,
      lingerMs: 0,
      onError: (err) => errors.push(err),
    });
    zombie.append("zombie");
    await zombie.flush().catch((err) => errors.push(err));
    expect(errors.some((err) => err instanceof StaleEpochError)).toBe(true);
    const text = await (await handle.stream({ live: false })).text();
    expect(text).toBe("from epoch 0from epoch 1");
  });

  test("closing ends live readers", async () => {
    const streamUrl = url("close");
    const handle = await DurableStream.create({ url: streamUrl, contentType: "text/plain" });
    await handle.append("first ");
    const res = await stream({ url: streamUrl, offset: "-1", live: "sse" });
    // Read live until the stream ends: at its closure.
    const text = (async () => {
      let all = "";
      for await (const piece of res.textStream()) all += piece;
      return all;
    })();
    await handle.append("last");
    await handle.close();
    expect(await text).toBe("first last");
    const head = await handle.head();
    expect(head.streamClosed).toBe(true);
  });
});
