// The reference server (@durable-streams/server), file-backed in the
// directory given, on a loopback port; prints its URL. For
// benches/durable_streams.rs.
import { DurableStreamTestServer } from "@durable-streams/server";

const server = new DurableStreamTestServer({ port: 0, host: "127.0.0.1", dataDir: process.argv[2] });
console.log(await server.start());
