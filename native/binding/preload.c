/* Opens shared libraries for the addon, once, and keeps them open for the life of the process.
 * Node's process.dlopen closes a library that is not an addon, so it cannot do this. */
#include <dlfcn.h>
#include <node_api.h>
#include <stdio.h>

static napi_value open_library(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  size_t len = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &len) != napi_ok || len >= sizeof path - 1) {
    napi_throw_type_error(env, NULL, "preload.open: expected a library path (string)");
    return NULL;
  }
  /* RTLD_LOCAL: the symbols stay out of the global namespace; the addon finds the library by soname. */
  if (!dlopen(path, RTLD_NOW | RTLD_LOCAL)) {
    char message[8192];
    snprintf(message, sizeof message, "cannot load %s: %s", path, dlerror());
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  napi_value result;
  napi_get_boolean(env, 1, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "open", NAPI_AUTO_LENGTH, open_library, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "open", fn) != napi_ok) return NULL;
  return exports;
}
