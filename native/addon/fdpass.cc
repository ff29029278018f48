// fdpass.cc - the `fdpass` export: send bytes with a file descriptor
// attached (SCM_RIGHTS) over a connected Unix-domain socket.
//
// Why native: Node can pass descriptors only to its own children (the IPC
// channel of child_process); the broker must hand a preloaded process the
// TCP connection it opened to the lock server on that process's behalf
// (docs/broker.md), so that each lock goes straight to the server instead of
// through the broker (two hops fewer per request).
//
// Also: the peer's uid of a Unix-domain socket (SO_PEERCRED).
//
// Owns: one sendmsg, one getsockopt. Does not own: which socket, which descriptor, when
// (src/broker/), or closing anything (the caller closes its copies).
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* struct ucred */
#endif
#include <napi.h>

#include <cerrno>
#include <cstring>

#include <sys/socket.h>
#include <sys/uio.h>

namespace {

// sendFd(unixFd, fd | [fd, fd2], bytes) -> 0, or -errno. Blocks only as
// long as the socket's send buffer is full (a few dozen bytes: in practice
// never). Two descriptors ride in ONE SCM_RIGHTS message (a resilient pair:
// primary, secondary): the receiver learns the count from the message
// itself (shim_broker.c read_first), with no field of ours to keep in step.
Napi::Value SendFd(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 3 || !info[0].IsNumber() || !(info[1].IsNumber() || info[1].IsArray()) || !info[2].IsBuffer()) {
    Napi::TypeError::New(env, "sendFd(unixFd, fd | [fd, fd2], bytes)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int sock = info[0].As<Napi::Number>().Int32Value();
  int fds[2] = {-1, -1};
  size_t nfds = 1;
  if (info[1].IsNumber()) {
    fds[0] = info[1].As<Napi::Number>().Int32Value();
  } else {
    auto a = info[1].As<Napi::Array>();
    if (a.Length() < 1 || a.Length() > 2) {
      Napi::TypeError::New(env, "sendFd: one or two descriptors").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    nfds = a.Length();
    for (uint32_t i = 0; i < nfds; i++) {
      Napi::Value v = a.Get(i);
      if (!v.IsNumber()) {
        Napi::TypeError::New(env, "sendFd: descriptors are numbers").ThrowAsJavaScriptException();
        return env.Undefined();
      }
      fds[i] = v.As<Napi::Number>().Int32Value();
    }
  }
  auto bytes = info[2].As<Napi::Buffer<uint8_t>>();
  if (bytes.Length() == 0) {
    // A message must carry at least one byte for the descriptor to ride on.
    Napi::TypeError::New(env, "sendFd: bytes must not be empty").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct iovec iov;
  iov.iov_base = bytes.Data();
  iov.iov_len = bytes.Length();
  union {
    char buf[CMSG_SPACE(2 * sizeof(int))];
    struct cmsghdr align;
  } control;
  std::memset(&control, 0, sizeof control);
  struct msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.buf;
  msg.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
  struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
  std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  ssize_t n;
  do {
    n = sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Napi::Number::New(env, -errno);
  // A short send would split the frame from its descriptor's message.
  if (static_cast<size_t>(n) != bytes.Length()) return Napi::Number::New(env, -EMSGSIZE);
  return Napi::Number::New(env, 0);
}

// peerUid(unixFd) -> the connected peer's uid (SO_PEERCRED: its credentials
// when it called connect(), kept by the kernel, not claimed by the peer), or
// -errno. The broker serves its own uid only (docs/broker.md, "Who may talk
// to whom").
Napi::Value PeerUid(const Napi::CallbackInfo &info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) {
    Napi::TypeError::New(env, "peerUid(unixFd)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(info[0].As<Napi::Number>().Int32Value(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
    return Napi::Number::New(env, -errno);
  return Napi::Number::New(env, static_cast<double>(cred.uid));
}

}  // namespace

void JdlsFdpassInit(Napi::Env env, Napi::Object exports) {
  auto o = Napi::Object::New(env);
  o.Set("sendFd", Napi::Function::New(env, SendFd, "sendFd"));
  o.Set("peerUid", Napi::Function::New(env, PeerUid, "peerUid"));
  exports.Set("fdpass", o);
}
