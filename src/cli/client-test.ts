// client-test.ts - `jdls -Cteststring`: check the JDLS client configuration
// end to end (guide, "Client Distributed Lock Deployment"): connect to each
// configured server as a client would, send the test string, print the
// guide's messages.
//
// Exit codes: 0 every configured server echoed the string; 1 JDLS unset, or a
// server could not be reached or answered wrongly; 2 JDLS malformed.
// Informational lines go to stdout, failure lines to stderr; errors are also
// appended to jbase_error_trace (src/client/logging.ts).
import { JdlsError } from '../errors.js';
import { parseJdls, type JdlsConfig } from '../client/jdls-env.js';
import { JdlsClient } from '../client/client.js';
import { createClientLogger } from '../client/logging.js';
import { systemErrorText, isSocketAllocationError } from '../client/errors.js';

export interface ClientTestOutput {
  out(line: string): void;
  err(line: string): void;
}

/** Run the test; returns the exit code. */
export async function clientTest(text: string, io: ClientTestOutput, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const raw = env['JDLS'];
  if (raw === undefined) {
    io.err('Client: JDLS is not set: distributed locking is not configured (e.g. JDLS=SERVER=localhost,50002)');
    return 1;
  }
  let config: JdlsConfig;
  try {
    config = parseJdls(raw);
  } catch (e) {
    io.err(`jdls: ${(e as Error).message}`);
    return 2;
  }
  const log = createClientLogger(config, { name: 'client-test' });
  let failed = false;
  for (const server of config.servers) {
    io.out(`Client: Using host '${server.host}', service '${server.port}'`);
    let client: JdlsClient;
    try {
      // One server at a time: -C checks each configured server, not failover.
      client = await JdlsClient.connect({ ...config, servers: [server] }, { logger: log, program: 'jdls -C' });
    } catch (e) {
      // The guide's order: for a socket that cannot be made, its one line
      // right after `Using host`; for a failed connection, the consequence
      // (`unable to connect ...`), then the cause (`connection failed ...`).
      if (isSocketAllocationError((e as Error).cause)) io.err('Client: Unable to allocate socket');
      else {
        const why = e instanceof JdlsError && e.code === 'CONNECT_FAILED' ? systemErrorText(e.cause) : (e as Error).message;
        io.err('Client: unable to connect to distributed lock service, locks not enabled');
        io.err(`Client: connection failed for host '${server.host}', service '${server.port}', error ${why}`);
      }
      failed = true;
      continue;
    }
    const { pid, mechanism } = client.server;
    try {
      const echoed = await client.test(text);
      if (echoed === text) io.out(`Client: test string '${text}' echoed by lock server pid ${pid} (mechanism ${mechanism})`);
      else {
        io.err(`Client: test string '${text}' came back from lock server pid ${pid} as '${echoed}'`);
        log.error({ server: `${server.host}:${server.port}`, sent: text, echoed }, 'test string not echoed');
        failed = true;
      }
    } catch (e) {
      io.err('Client: unable to connect to distributed lock service, locks not enabled');
      io.err(`Client: test string '${text}' failed on host '${server.host}', service '${server.port}': ${(e as Error).message}`);
      failed = true;
    } finally {
      await client.close();
    }
  }
  return failed ? 1 : 0;
}
