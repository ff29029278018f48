# binding.gyp - the one build description for jdls' native parts.
#
#   jdls          the Node addon (native/addon + native/common)
#   jdls-locker   a C program that takes locks as a runtime would (tests)
#   jdls-cbench   the C side of `npm run bench`
#   jdls-protovectors  checks the protocol test vectors' headers against jdls_proto.h (tests)
#   jdls-routecases   the routing table's C side (tests)
#   jdls-oslocker a C program that takes OS record locks, OFD or classic (tests)
#   jdlsshim      libjdlsshim.so, the preload shim (shim/, docs/shim.md)
#   jdls-shimlocker / jdls-shimapi / jdls-shiminfo / jdls-jbrt / jdls-shimdeadlock  C programs run under the shim (tests)
#   jdls-chaosshim  the chaos suite's C workload under the shim (chaos/fixtures/chaos-shim.c)
#
# node-gyp runs this on `npm ci` against the running Node's own headers
# (package.json passes --nodedir), so nothing is downloaded.
{
  "target_defaults": {
    "cflags": ["-Wall", "-Wextra", "-O2", "-pthread"],
    "cflags_c": ["-std=gnu11"],
    "ldflags": ["-pthread"],
  },
  "targets": [
    {
      "target_name": "jdls",
      "sources": ["native/addon/addon.cc", "native/addon/proto.cc", "native/addon/oslock.cc", "native/addon/fdpass.cc", "native/addon/tokens.cc", "native/common/jdls_table.c", "native/common/jdls_service.c", "native/common/jdls_oslock.c"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["-std=c++17", "-fvisibility=hidden"],
    },
    {
      "target_name": "jdls-locker",
      "type": "executable",
      "sources": ["test/fixtures/locker.c", "native/common/jdls_table.c", "native/common/jdls_service.c"],
    },
    {
      "target_name": "jdls-cbench",
      "type": "executable",
      "sources": ["bench/cbench.c", "native/common/jdls_table.c", "native/common/jdls_service.c"],
      "libraries": ["-lm", "-ldl"],
    },
    {
      "target_name": "jdls-protovectors",
      "type": "executable",
      "sources": ["test/fixtures/proto-vectors.c"],
    },
    {
      # The routing table's C side (native/common/jdls_route.h), for test/route.test.ts.
      "target_name": "jdls-routecases",
      "type": "executable",
      "sources": ["test/fixtures/route-cases.c"],
    },
    {
      "target_name": "jdls-oslocker",
      "type": "executable",
      "sources": ["test/fixtures/oslocker.c", "native/common/jdls_oslock.c", "native/common/jdls_table.c", "native/common/jdls_service.c"],
    },
      {
      # The preload shim. Traps: "product_prefix" - node-gyp's addon.gypi
      # sets it to '' (the file would be jdlsshim.so); "defines!" - node-gyp
      # adds _FILE_OFFSET_BITS=64 everywhere, which renames fcntl/lockf to
      # fcntl64/lockf64 in the headers, and the shim defines both.
      "target_name": "jdlsshim",
      "type": "shared_library",
      "product_prefix": "lib",
      "defines!": ["_FILE_OFFSET_BITS=64"],
      "sources": ["shim/shim_real.c", "shim/shim_classify.c", "shim/shim_route.c",
                  "shim/shim_record.c", "shim/shim_interpose.c", "shim/shim_api.c", "shim/shim_broker.c", "shim/shim_binary.c", "shim/shim_binapi.c",
                  "shim/shim_info.c",
                  "shim/shim_log.c",
                  "native/common/jdls_table.c", "native/common/jdls_service.c", "native/common/jdls_oslock.c"],
      "cflags": ["-fPIC", "-fvisibility=hidden"],
      "ldflags": ["-pthread", "-Wl,--no-undefined"],
      "libraries": ["-ldl", "-pthread"],
    },
    {
      "target_name": "jdls-shimlocker",
      "type": "executable",
      "sources": ["test/fixtures/shim-locker.c"],
    },
    {
      "target_name": "jdls-jbrt",
      "type": "executable",
      "sources": ["test/fixtures/jbase-runtime.c"],
      "libraries": ["-ldl"],
    },
    {
      "target_name": "jdls-shimapi",
      "type": "executable",
      "sources": ["test/fixtures/shim-api.c"],
      "libraries": ["-ldl"],
    },
    {
      # Names files for the info records (jdls_declare_file), for test/shim-info.test.ts.
      "target_name": "jdls-shiminfo",
      "type": "executable",
      "sources": ["test/fixtures/shim-info.c"],
      "libraries": ["-ldl"],
    },
    {
      # The chaos suite's unmodified C workload under the shim (issue 13):
      # plain C, not linked to jdls (the C API only through dlsym).
      "target_name": "jdls-chaosshim",
      "type": "executable",
      "sources": ["chaos/fixtures/chaos-shim.c"],
      "libraries": ["-ldl"],
    },
    {
      "target_name": "jdls-shimdeadlock",
      "type": "executable",
      "sources": ["test/fixtures/shim-deadlock.c"],
      "libraries": ["-ldl"],
    },
  ],
}
