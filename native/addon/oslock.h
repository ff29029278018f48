// oslock.h - what addon.cc needs from oslock.cc: the one init call that
// registers OS file locks as exports.oslock.
#ifndef JDLS_ADDON_OSLOCK_H
#define JDLS_ADDON_OSLOCK_H
#include <napi.h>
void jdls_oslock_init(Napi::Env env, Napi::Object exports);
#endif
