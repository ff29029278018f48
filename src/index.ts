// index.ts - the package's public API.
export { LockTable, fileId, makeOwner, groupsFor } from './locks/table.js';
export type { LockMode, FileId, Owner, OwnerSpec, Holder, LockResult, LockOptions, LockRow, TableHeader, TableUsage, CreateOptions } from './locks/table.js';
export { JdlsError } from './errors.js';
export type { JdlsErrorCode } from './errors.js';
export { releaseDir, tablePath, attachedProcesses } from './installation.js';
export type { RecordLocks, MechanismKind } from './locks/mechanism.js';
export * from './locks/ranges.js';
export { JdlsClient } from './client/client.js';
export type { ConnectOptions, RemoteFile, RemoteKey, RemoteLockOptions, RemoteLockResult, RemoteStatus, WaitingInfo, ServerInfo, JdlsClientEvents } from './client/client.js';
export { parseJdls, jdlsFromEnv, DEFAULT_JDLS_PORT, DEFAULT_TIMEOUT_SECONDS } from './client/jdls-env.js';
export type { JdlsConfig, JdlsServer, JdlsLockScope } from './client/jdls-env.js';
export { createClientLogger, defaultErrorTracePath } from './client/logging.js';
export type { ClientErrorCode } from './client/codes.js';
export { BinaryLocks, DEFAULT_BINARY_DIR, type BinaryLocksOptions, type BinaryLockOptions, type BinaryLockResult, type BinaryHolder, type BinaryLockRow, type BinaryKind, type RangeTarget } from './locks/binary.js';
export { FenceKeeper, recordLockName, checkFencingToken, sqliteFencedScript, SQLITE_FENCE_SCHEMA, SQLITE_FENCE_ADMIT, SQLITE_FENCE_REFUSED } from './fencing.js';
