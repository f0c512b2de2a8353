// ESM entry: the same module as index.js (one instance, one set of classes).
import sessionlock from './index.js';

export const {
  acquire,
  queued,
  Lock,
  Transcript,
  Attempt,
  classifiers,
  status,
  doctor,
  acquireSessionWriteLock,
  SessionWriteLockTimeoutError,
  SessionWriteLockStaleError,
  isSessionWriteLockTimeoutError,
  isSessionWriteLockStaleError,
  isSessionWriteLockAcquireError,
  SessionLockError,
  SessionLockTimeoutError,
  SessionLockBusyError,
  SessionLockStaleError,
  SessionLockRevokedError,
  SessionLockFencedError,
  SessionLockPoisonedError,
  SessionLockTakeoverError,
  SessionLockCancelledError,
  SessionLockMisuseError,
  SessionLockInvalidEntryError,
  SessionLockIoError,
  SessionLockEpochExhaustedError,
  SessionLockInvalidPathError,
  SessionLockBackendError,
  SessionLockPanicError,
} = sessionlock;

export default sessionlock;
