// codes.ts - the JdlsError codes the client side adds (type only, so that
// src/errors.ts can name them without importing any client code).
//
//   BAD_JDLS        the JDLS value is malformed (parseJdls); locking does not start
//   CONNECT_FAILED  the TCP connection to a lock server could not be made
//   SERVER_DEAD     the server was silent longer than TIMEOUT while an answer was due
//   SERVER_CLOSED   the server closed or reset the connection
//   PROTOCOL        a frame broke the protocol (ours, as the server says, or the server's)
//   VERSION         the server speaks no protocol version this client speaks
//   LIMIT           a server limit (connections, locks per client, outstanding requests)
//   CANCELLED       the server withdrew a waiting request (CANCEL, or it is closing)
//   SHUTDOWN        the server is stopping
//   AUTH            authentication refused or failed (shared secret, docs/protocol.md), or the key file is unusable
//   TLS             the TLS handshake failed (certificate, CA file)
//   NOT_LEADER      a witnessed server that is not the pair's leader refused a lock or a promotion,
//                   or lost its leadership and closed (docs/protocol.md, "Pairs and the witness")
//   SPLIT_REFUSED   a SERVER2 client lost its primary and the witness did not make the secondary
//                   primary within TIMEOUT: it stops rather than risk two holders of one lock
export type ClientErrorCode =
  | 'BAD_JDLS' | 'CONNECT_FAILED' | 'SERVER_DEAD' | 'SERVER_CLOSED' | 'PROTOCOL'
  | 'VERSION' | 'LIMIT' | 'CANCELLED' | 'SHUTDOWN' | 'AUTH' | 'TLS' | 'NOT_LEADER' | 'SPLIT_REFUSED';
