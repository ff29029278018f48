// proto.cc - the wire protocol's numbers as the addon's `proto` export.
//
// Owns: turning every #define of native/common/jdls_proto.h into a property of
// one plain object, keyed by the macro's own name (JDLS_FT_LOCK, ...), so
// test/protocol-constants.test.ts can prove that src/protocol/constants.ts
// mirrors the header exactly. Keyed by the full macro name on purpose: the
// test parses the header's #define lines and demands the same set of names
// here, so a constant added to the header but forgotten in this list (or in
// the TypeScript mirror) fails a test instead of drifting silently.
#include <napi.h>

extern "C" {
#include "../common/jdls_proto.h"
}

namespace {

#define JDLS_PROTO_CONST(name) o.Set(#name, Napi::Number::New(env, (name)))

Napi::Object ProtoConstants(Napi::Env env) {
  auto o = Napi::Object::New(env);
  // limits and versions
  JDLS_PROTO_CONST(JDLS_PROTO_VERSION);
  JDLS_PROTO_CONST(JDLS_PROTO_MIN_VERSION);
  JDLS_PROTO_CONST(JDLS_PROTO_HEADER);
  JDLS_PROTO_CONST(JDLS_PROTO_MIN_LENGTH);
  JDLS_PROTO_CONST(JDLS_PROTO_MAX_FRAME);
  JDLS_PROTO_CONST(JDLS_PROTO_MAX_KEY);
  JDLS_PROTO_CONST(JDLS_PROTO_MAX_STR);
  JDLS_PROTO_CONST(JDLS_PROTO_DEFAULT_PORT);
  // frame types, client -> server
  JDLS_PROTO_CONST(JDLS_FT_HELLO);
  JDLS_PROTO_CONST(JDLS_FT_AUTH);
  JDLS_PROTO_CONST(JDLS_FT_LOCK);
  JDLS_PROTO_CONST(JDLS_FT_UNLOCK);
  JDLS_PROTO_CONST(JDLS_FT_UNLOCK_FILE);
  JDLS_PROTO_CONST(JDLS_FT_UNLOCK_ALL);
  JDLS_PROTO_CONST(JDLS_FT_STATUS);
  JDLS_PROTO_CONST(JDLS_FT_CANCEL);
  JDLS_PROTO_CONST(JDLS_FT_TEST);
  JDLS_PROTO_CONST(JDLS_FT_PING);
  JDLS_PROTO_CONST(JDLS_FT_RANGE_LOCK);
  JDLS_PROTO_CONST(JDLS_FT_RANGE_UNLOCK);
  JDLS_PROTO_CONST(JDLS_FT_RANGE_TEST);
  // frame types, server -> client
  JDLS_PROTO_CONST(JDLS_FT_WELCOME);
  JDLS_PROTO_CONST(JDLS_FT_CHALLENGE);
  JDLS_PROTO_CONST(JDLS_FT_AUTH_OK);
  JDLS_PROTO_CONST(JDLS_FT_GRANTED);
  JDLS_PROTO_CONST(JDLS_FT_LOCKED);
  JDLS_PROTO_CONST(JDLS_FT_WAITING);
  JDLS_PROTO_CONST(JDLS_FT_RELEASED);
  JDLS_PROTO_CONST(JDLS_FT_STATUS_RESULT);
  JDLS_PROTO_CONST(JDLS_FT_TEST_RESULT);
  JDLS_PROTO_CONST(JDLS_FT_PONG);
  JDLS_PROTO_CONST(JDLS_FT_RANGE_RESULT);
  JDLS_PROTO_CONST(JDLS_FT_ERROR);
  // flags
  JDLS_PROTO_CONST(JDLS_FF_NOWAIT);
  JDLS_PROTO_CONST(JDLS_FF_AUTH);
  JDLS_PROTO_CONST(JDLS_FF_NO_INTERIM);
  JDLS_PROTO_CONST(JDLS_FF_OSLOCKS);
  JDLS_PROTO_CONST(JDLS_FF_ALL_THREADS);
  JDLS_PROTO_CONST(JDLS_FF_EXEC);
  JDLS_PROTO_CONST(JDLS_FF_FILELOCK);
  JDLS_PROTO_CONST(JDLS_FF_PROBE_READ);
  JDLS_PROTO_CONST(JDLS_FF_PROBE_WRITE);
  JDLS_PROTO_CONST(JDLS_FF_STATUS_OSLOCKS);
  JDLS_PROTO_CONST(JDLS_FF_TOKENS);
  JDLS_PROTO_CONST(JDLS_FF_BREAK_DEADLOCK);
  JDLS_PROTO_CONST(JDLS_FF_FENCE);
  // mechanisms
  JDLS_PROTO_CONST(JDLS_MECH_SHM);
  JDLS_PROTO_CONST(JDLS_MECH_OS);
  // ERROR codes
  JDLS_PROTO_CONST(JDLS_PE_PROTOCOL);
  JDLS_PROTO_CONST(JDLS_PE_VERSION);
  JDLS_PROTO_CONST(JDLS_PE_LIMIT);
  JDLS_PROTO_CONST(JDLS_PE_TABLE_FULL);
  JDLS_PROTO_CONST(JDLS_PE_KEY_TOO_LONG);
  JDLS_PROTO_CONST(JDLS_PE_CANCELLED);
  JDLS_PROTO_CONST(JDLS_PE_BAD_ARGUMENT);
  JDLS_PROTO_CONST(JDLS_PE_SYSTEM);
  JDLS_PROTO_CONST(JDLS_PE_SHUTDOWN);
  JDLS_PROTO_CONST(JDLS_PE_NOT_SUPPORTED);
  JDLS_PROTO_CONST(JDLS_PE_AUTH);
  JDLS_PROTO_CONST(JDLS_PE_DEADLOCK);
  // the shared-secret handshake
  JDLS_PROTO_CONST(JDLS_AUTH_NONCE);
  JDLS_PROTO_CONST(JDLS_AUTH_MAC);
  JDLS_PROTO_CONST(JDLS_AUTH_HMAC_SHA256);
  return o;
}

#undef JDLS_PROTO_CONST

}  // namespace

// Called from addon.cc's Init (declared there): adds `proto` to the exports.
void JdlsProtoInit(Napi::Env env, Napi::Object exports) {
  exports.Set("proto", ProtoConstants(env));
}
