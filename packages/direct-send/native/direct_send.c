/*
 * send(fd, bytes): one non-blocking send(2) of a whole Buffer to a connected socket's file
 * descriptor. Answers undefined when the kernel took every byte; otherwise the bytes it took
 * (fewer than asked), or -errno: -EAGAIN when the socket's send buffer is full, -EPIPE or
 * -ECONNRESET when the peer is gone, -EINVAL for arguments that are not an fd and a Buffer. It
 * never throws and never blocks.
 *
 * Undefined (a NULL result) for the usual case, not the count: making a number is a handle in
 * the call's scope (v8::Integer::New), and with its N-API wrapper that was 9% of the node's
 * user-space CPU in a fan-out (W1 under perf, docs/performance.md).
 *
 * Node ignores SIGPIPE; MSG_NOSIGNAL (where there is one) keeps a closed peer from raising it
 * in a process that does not.
 */
#include <errno.h>
#include <node_api.h>
#include <sys/socket.h>
#include <stdint.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

/* One non-blocking send(2) of `length` bytes to `fd`, retried on EINTR: the bytes taken, or -errno. */
static ssize_t SendOnce(int fd, const void* data, size_t length) {
  ssize_t sent;
  do {
    sent = send(fd, data, length, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  return sent < 0 ? -errno : sent;
}

static napi_value Send(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1;
  void* data = NULL;
  size_t length = 0;
  ssize_t sent;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_get_buffer_info(env, argv[1], &data, &length) != napi_ok) {
    sent = -EINVAL;
  } else {
    sent = SendOnce(fd, data, length);
    if ((size_t)sent == length) return NULL;
  }
  napi_create_int32(env, (int32_t)sent, &result);
  return result;
}

/*
 * sendMany(fds, count, bytes, results): send(fd, bytes) for each of the first `count` fds of an
 * Int32Array, in order, each answer (the bytes taken, or -errno) into the same place of the
 * Int32Array `results`. Answers how many were not sent whole (0 when every one was), or -EINVAL
 * (having sent nothing) for arguments that are not that: a fan-out's writes of one Buffer in one
 * call instead of one a subscriber (the call's own cost, N-API's argument reads and V8's callback,
 * was 15% of the node's user-space instructions a delivery at W1).
 */
static napi_value SendMany(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_typedarray_type fdsType, resultsType;
  size_t fdsLength = 0, resultsLength = 0, length = 0;
  void *fdsData = NULL, *resultsData = NULL, *data = NULL;
  uint32_t count = 0;
  int32_t partial = 0;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 ||
      napi_get_typedarray_info(env, argv[0], &fdsType, &fdsLength, &fdsData, NULL, NULL) != napi_ok ||
      fdsType != napi_int32_array || napi_get_value_uint32(env, argv[1], &count) != napi_ok ||
      napi_get_buffer_info(env, argv[2], &data, &length) != napi_ok ||
      napi_get_typedarray_info(env, argv[3], &resultsType, &resultsLength, &resultsData, NULL, NULL) != napi_ok ||
      resultsType != napi_int32_array || count > fdsLength || count > resultsLength) {
    partial = -EINVAL;
  } else {
    const int32_t* fds = fdsData;
    int32_t* answers = resultsData;
    for (uint32_t i = 0; i < count; i++) {
      ssize_t sent = fds[i] < 0 ? -EBADF : SendOnce(fds[i], data, length);
      answers[i] = (int32_t)sent;
      if ((size_t)sent != length) partial += 1;
    }
  }
  napi_create_int32(env, partial, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "send", NAPI_AUTO_LENGTH, Send, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "send", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "sendMany", NAPI_AUTO_LENGTH, SendMany, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "sendMany", fn) != napi_ok) return NULL;
  return exports;
}
