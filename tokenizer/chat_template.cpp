// ChatTemplate (chat_template.h): the template compiled and rendered by Jinja2 in an embedded
// CPython — Debian's libpython3.11 and python3-jinja2, whatever the environment says — through
// a small Python module (kModuleSource below) that repeats transformers' render path.
// The Python headers must come first: they set feature macros the C library reads.
#define PY_SSIZE_T_CLEAN
#include "tokenizer/chat_template.h"

#include <Python.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>

#include "common/text_file.h"

namespace sw::tokenizer {
namespace {

// Where Debian keeps the interpreter this library links: its stdlib and python3-jinja2.
constexpr const char* kPrefix = "/usr";
constexpr const char* kDistPackages = "/usr/lib/python3/dist-packages";
// Messages, tools, documents and variables nested deeper than this are refused before they
// reach Python, whose recursion (json, Jinja) would otherwise use up a thread's stack.
constexpr int kMaxJsonDepth = 256;
// A chat template file read whole: tokenizer_config.json files of large vocabularies run to
// tens of megabytes.
constexpr int64_t kMaxTemplateFileBytes = int64_t{256} << 20;

// Runs once in the interpreter: `compile_template` and `render_template` for the C++ below.
constexpr const char* kModuleSource = R"PY(
# Chat templates rendered as transformers 5.x's apply_chat_template(tokenize=False) renders
# them (transformers/utils/chat_template_utils.py: _cached_compile_jinja_template and
# render_jinja_template; tokenization_utils_base.py: apply_chat_template), on Debian's Jinja2
# 3.1.2 brought to 3.1.6's behaviour where a template can tell them apart. Called from C++:
# compile_template() and render_template() return a result or (message, line), never raise.
import json
from collections.abc import MutableSequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.filters
import jinja2.idtracking
import jinja2.nodes
import jinja2.parser
import jinja2.runtime
import jinja2.utils
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


# --- Jinja2 3.1.2 -> 3.1.6, what a chat template can see ---------------------------------
# 3.1.5 (#1253): a name set in every branch of an if/elif/else still aliases the outer name,
# so reading it inside a branch before the set sees the outer value, not undefined.
def _branch_update(self, branch_symbols):
    stores = set()
    for branch in branch_symbols:
        stores.update(branch.stores)
    stores.difference_update(self.stores)
    for sym in branch_symbols:
        self.refs.update(sym.refs)
        self.loads.update(sym.loads)
        self.stores.update(sym.stores)
    for name in stores:
        target = self.find_ref(name)
        assert target is not None, "should not happen"
        if self.parent is not None:
            outer_target = self.parent.find_ref(name)
            if outer_target is not None:
                self.loads[target] = (jinja2.idtracking.VAR_LOAD_ALIAS, outer_target)
                continue
        self.loads[target] = (jinja2.idtracking.VAR_LOAD_RESOLVE, name)


jinja2.idtracking.Symbols.branch_update = _branch_update

# 3.1.5 (#1921): `|int` of a float string too large for an int gives the default.
_sync_do_int = jinja2.filters.do_int


def _do_int(value, default=0, base=10):
    try:
        return _sync_do_int(value, default, base)
    except OverflowError:
        return default


# Refused by 3.1.5's sandbox on lists (MutableSequence): clear() and pop().
_REFUSED_LIST_METHODS = frozenset(["clear", "pop"])

# A chat template that multiplies a string or list into gigabytes, or raises an int to a
# huge power, gets an error instead of exhausting memory or hanging the renderer.
_MAX_PRODUCT_ITEMS = 1 << 26
_MAX_POWER_BITS = 1 << 20


class _SandboxedEnvironment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

    def is_safe_attribute(self, obj, attr, value):
        if isinstance(obj, MutableSequence) and attr in _REFUSED_LIST_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(count, int)
                        and len(seq) * count > _MAX_PRODUCT_ITEMS):
                    raise SecurityError(
                        f"a product of {len(seq)} items by {count} is over the limit of "
                        f"{_MAX_PRODUCT_ITEMS} items")
        elif operator == "**":
            if (isinstance(left, int) and isinstance(right, int) and abs(left) > 1
                    and right * abs(left).bit_length() > _MAX_POWER_BITS):
                raise SecurityError(f"a power of {right} is over the limit of {_MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


# --- transformers' environment -------------------------------------------------------------
class AssistantTracker(Extension):
    # Parses {% generation %} ... {% endgeneration %}; transformers records the spans of the
    # output it wraps for return_assistant_tokens_mask, which a plain render never asks.
    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        environment.extend(activate_tracker=self.activate_tracker)
        self._tracking = ContextVar("assistant_tracker", default=None)

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [],
                                      body).set_lineno(lineno)

    @jinja2.pass_eval_context
    def _generation_support(self, context, caller):
        rv = caller()
        if (tracking := self._tracking.get()) is not None:
            rendered_blocks, generation_indices = tracking
            start_index = len("".join(rendered_blocks))
            end_index = start_index + len(rv)
            generation_indices.append((start_index, end_index))
        return rv

    def is_active(self):
        return self._tracking.get() is not None

    @contextmanager
    def activate_tracker(self, rendered_blocks, generation_indices):
        if self.is_active():
            raise ValueError("AssistantTracker should not be reused before closed")
        token = self._tracking.set((rendered_blocks, generation_indices))
        try:
            yield
        finally:
            self._tracking.reset(token)


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


class TemplateDict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class TemplateNamespace(jinja2.utils.Namespace):
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute.")


def _make_template(chat_template):
    env = _SandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.filters["int"] = _do_int
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(chat_template)


# --- transformers' render path ----------------------------------------------------------
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _alias_reasoning_fields(chat):
    aliased_chat = []
    for message in chat:
        if isinstance(message, dict):
            reasoning = next((message[key] for key in _REASONING_FIELDS if message.get(key) is not None), None)
            if reasoning is not None:
                message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        aliased_chat.append(message)
    return aliased_chat


def _normalize_chat_messages(messages):
    normalized_messages = []
    for message in messages:
        if not isinstance(message, dict):
            raise TypeError(f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}.")
        normalized_messages.append({key: value for key, value in message.items() if value is not None})
    return normalized_messages


def _render(template, chat_template, conversation, tools, documents, add_generation_prompt,
            continue_final_message, kwargs):
    # apply_chat_template
    if not isinstance(conversation, list):
        raise TypeError(f"messages should be a list of messages, but got {type(conversation).__name__}")
    if len(conversation) == 0:
        raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
    if isinstance(conversation[0], list):
        raise TypeError("messages should be one conversation (a list of messages), not a batch of them")
    chat = _normalize_chat_messages(conversation)
    if continue_final_message and add_generation_prompt:
        raise ValueError(
            "continue_final_message and add_generation_prompt are not compatible. Use continue_final_message when you want the model to continue the final message, and add_generation_prompt when you want to add a header that will prompt it to start a new assistant message instead.")

    # render_jinja_template (JSON data is already plain: _plain_template_data changes nothing)
    if tools is not None:
        tool_schemas = []
        for tool in tools:
            if isinstance(tool, dict):
                tool_schemas.append(tool)
            else:
                raise ValueError(
                    "Tools should either be a JSON schema, or a callable function with type hints "
                    "and a docstring suitable for auto-conversion to a schema.")
    else:
        tool_schemas = None
    if documents is not None:
        for document in documents:
            if not isinstance(document, dict):
                raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")

    continue_final_message_tag = "CONTINUE_FINAL_MESSAGE_TAG "
    chat = _alias_reasoning_fields(chat)
    if continue_final_message:
        continue_final_message = continue_final_message if isinstance(continue_final_message, str) else "content"
        if (final_message := chat[-1].get(continue_final_message)) is None:
            raise ValueError(
                f'continue_final_message is set but the final message has no "{continue_final_message}" to continue!')
        continue_fields = [continue_final_message]
        if continue_final_message in _REASONING_FIELDS:
            continue_fields = [field for field in _REASONING_FIELDS if chat[-1].get(field) == final_message]
        if not any(field in chat_template for field in continue_fields):
            raise ValueError(
                f'continue_final_message is set to "{continue_final_message}" but this is not an accepted field in the chat_template')
        elif isinstance(final_message, (list, tuple)):
            for content_block in reversed(final_message):
                if "text" in content_block:
                    final_message = content_block["text"]
                    content_block["text"] = content_block["text"] + continue_final_message_tag
                    break
            else:
                raise ValueError(
                    "continue_final_message is set but we could not find any text to continue in the final message!")
        else:
            for field in continue_fields:
                chat[-1][field] = chat[-1][field] + continue_final_message_tag
    rendered_chat = template.render(messages=chat, tools=tool_schemas, documents=documents,
                                    add_generation_prompt=add_generation_prompt, **kwargs)
    if continue_final_message:
        if (final_message.strip() not in rendered_chat) or (
            continue_final_message_tag.strip() not in rendered_chat
        ):
            raise ValueError(
                "continue_final_message is set but the final message does not appear in the chat after "
                "applying the chat template! This can happen if the chat template deletes portions of "
                "the final message. Please verify the chat template and final message in your chat to "
                "ensure they are compatible."
                f"Final message to continue: {final_message.strip()}\nRendered chat:\n{rendered_chat}")
        tag_loc = rendered_chat.rindex(continue_final_message_tag.strip())
        if rendered_chat[tag_loc : tag_loc + len(continue_final_message_tag)] == continue_final_message_tag:
            rendered_chat = rendered_chat[:tag_loc]
        else:
            rendered_chat = rendered_chat[:tag_loc].rstrip()
    return rendered_chat


# --- Entry points for C++ ----------------------------------------------------------------
_MAX_MESSAGE_CHARS = 2000


def _error(e):
    if isinstance(e, TemplateError):
        text = e.message if isinstance(e, TemplateSyntaxError) else str(e)
    else:
        text = f"{type(e).__name__}: {e}"
    if len(text) > _MAX_MESSAGE_CHARS:
        text = text[:_MAX_MESSAGE_CHARS] + f"... ({len(text)} characters)"
    line = 0
    if isinstance(e, TemplateSyntaxError) and e.lineno:
        line = e.lineno
    else:
        # Jinja rewrites the traceback of an error in a template: its frames have the
        # template's line numbers in a code object named "<template>".
        tb = e.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "<template>":
                line = tb.tb_lineno
            tb = tb.tb_next
    return text, line


def compile_template(chat_template):
    """(template, source text) or (message, line)."""
    try:
        return True, (_make_template(chat_template), chat_template)
    except BaseException as e:
        return False, _error(e)


def render_template(handle, messages_json, tools_json, documents_json, add_generation_prompt,
                    continue_final_message, bos_token, eos_token, kwargs_json):
    """The prompt, or (message, line). *_json: JSON text, '' for None; '' tokens are unset."""
    try:
        template, chat_template = handle
        conversation = json.loads(messages_json)
        tools = json.loads(tools_json) if tools_json else None
        documents = json.loads(documents_json) if documents_json else None
        kwargs = json.loads(kwargs_json) if kwargs_json else {}
        if not isinstance(kwargs, dict):
            raise TypeError("template variables should be a JSON object")
        # The tokenizer's special tokens (special_tokens_map holds the ones set), then the
        # caller's variables, which win.
        special_tokens = {}
        if bos_token:
            special_tokens["bos_token"] = bos_token
        if eos_token:
            special_tokens["eos_token"] = eos_token
        kwargs = {**special_tokens, **kwargs}
        return True, _render(template, chat_template, conversation, tools, documents,
                             add_generation_prompt, continue_final_message, kwargs)
    except BaseException as e:
        return False, _error(e)

)PY";

// --- The interpreter --------------------------------------------------------------------

// Holds the GIL for a scope, from any thread.
class Gil {
 public:
  Gil() : state_(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state_); }
  Gil(const Gil&) = delete;
  Gil& operator=(const Gil&) = delete;

 private:
  PyGILState_STATE state_;
};

// Owns one reference; only touched with the GIL held.
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(PyObject* p) : p_(p) {}
  ~PyRef() { Py_XDECREF(p_); }
  PyRef(PyRef&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  PyRef& operator=(PyRef&& o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  PyObject* get() const { return p_; }
  PyObject* release() { return std::exchange(p_, nullptr); }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

// The pending Python exception as text (and cleared); GIL held.
std::string take_python_error() {
  PyObject *type = nullptr, *value = nullptr, *tb = nullptr;
  PyErr_Fetch(&type, &value, &tb);
  PyErr_NormalizeException(&type, &value, &tb);
  std::string text = "unknown Python error";
  if (value != nullptr) {
    PyRef s(PyObject_Str(value));
    const char* utf8 = s ? PyUnicode_AsUTF8(s.get()) : nullptr;
    const char* name = type != nullptr ? reinterpret_cast<PyTypeObject*>(type)->tp_name : "?";
    text = utf8 != nullptr ? std::string(name) + ": " + utf8 : std::string(name);
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(tb);
  return text;
}

std::optional<std::string> utf8_of(PyObject* s) {
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(s, &size);
  if (data == nullptr) return std::nullopt;
  return std::string(data, static_cast<size_t>(size));
}

// Stops renders that run past their deadline: an asynchronous TimeoutError in the rendering
// thread, raised the next time it runs Python bytecode (again each second if the template
// swallows it). Lock order: the GIL, then mu_.
class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;

  // GIL held. Returns a ticket for end(); `timeout_s` <= 0 (or NaN) is no limit.
  uint64_t begin(double timeout_s) {
    auto deadline = Clock::time_point::max();
    if (timeout_s > 0) {
      const std::chrono::duration<double> limit(std::min(timeout_s, 1e6));
      deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(limit);
    }
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t ticket = next_ticket_++;
    active_[ticket] = Entry{deadline, PyThread_get_thread_ident(), false};
    if (!thread_started_) {
      thread_started_ = true;
      std::thread([this] { run(); }).detach();
    }
    cv_.notify_one();
    return ticket;
  }

  // GIL held. Whether the render was stopped; a TimeoutError not yet raised is dropped.
  bool end(uint64_t ticket) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = active_.find(ticket);
    const bool fired = it->second.fired;
    if (fired) PyThreadState_SetAsyncExc(it->second.thread_id, nullptr);
    active_.erase(it);
    return fired;
  }

 private:
  struct Entry {
    Clock::time_point deadline;
    unsigned long thread_id;
    bool fired;
  };

  void run() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      auto next = Clock::time_point::max();
      for (const auto& [ticket, e] : active_) next = std::min(next, e.deadline);
      if (next == Clock::time_point::max()) {
        cv_.wait(lock);
        continue;
      }
      if (Clock::now() < next) {
        cv_.wait_until(lock, next);
        continue;
      }
      // Take the GIL without mu_ (a render thread holds the GIL while it takes mu_), then
      // look again: the render may have ended meanwhile.
      lock.unlock();
      {
        Gil gil;
        std::lock_guard<std::mutex> relock(mu_);
        const auto now = Clock::now();
        for (auto& [ticket, e] : active_) {
          if (e.deadline > now) continue;
          PyThreadState_SetAsyncExc(e.thread_id, PyExc_TimeoutError);
          e.fired = true;
          e.deadline = now + std::chrono::seconds(1);
        }
      }
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Entry> active_;
  uint64_t next_ticket_ = 0;
  bool thread_started_ = false;
};

struct Runtime {
  Status status;  // why the interpreter or the module is unusable
  PyObject* compile_fn = nullptr;
  PyObject* render_fn = nullptr;
  Watchdog* watchdog = nullptr;
};

Status python_status_error(const char* what, const PyStatus& st) {
  return internal_error("chat templates: {} failed: {}{}{}", what, st.func ? st.func : "",
                        st.func ? ": " : "", st.err_msg ? st.err_msg : "");
}

// GIL held: runs kModuleSource as module _shardwise_chat_template.
Status load_module(Runtime* rt) {
  PyRef module(PyModule_New("_shardwise_chat_template"));
  if (!module) return internal_error("chat templates: {}", take_python_error());
  PyObject* dict = PyModule_GetDict(module.get());  // borrowed
  if (PyDict_SetItemString(dict, "__builtins__", PyEval_GetBuiltins()) != 0)
    return internal_error("chat templates: {}", take_python_error());
  PyRef ran(PyRun_String(kModuleSource, Py_file_input, dict, dict));
  if (!ran) {
    return internal_error(
        "chat templates: the embedded module failed to load (is Debian's python3-jinja2 "
        "installed in {}?): {}",
        kDistPackages, take_python_error());
  }
  PyObject* compile_fn = PyDict_GetItemString(dict, "compile_template");  // borrowed
  PyObject* render_fn = PyDict_GetItemString(dict, "render_template");
  if (compile_fn == nullptr || render_fn == nullptr)
    return internal_error("chat templates: the embedded module has no entry points");
  Py_INCREF(compile_fn);
  Py_INCREF(render_fn);
  rt->compile_fn = compile_fn;
  rt->render_fn = render_fn;
  module.release();  // lives for the process, like the functions that refer to its globals
  return Status::ok_status();
}

std::wstring widen(const std::string& s) { return std::wstring(s.begin(), s.end()); }

// Starts Debian's interpreter, isolated from the environment (PYTHONHOME, PYTHONPATH, a
// pyenv Python earlier on PATH, user site-packages, .pth files), with exactly its stdlib and
// dist-packages on sys.path; returns with the GIL released.
Status start_interpreter() {
  PyPreConfig preconfig;
  PyPreConfig_InitIsolatedConfig(&preconfig);  // leaves the process's locale alone
  preconfig.utf8_mode = 1;
  PyStatus st = Py_PreInitialize(&preconfig);
  if (PyStatus_Exception(st)) return python_status_error("Py_PreInitialize", st);

  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.site_import = 0;
  config.write_bytecode = 0;
  config.install_signal_handlers = 0;
  config.module_search_paths_set = 1;
  const std::string version =
      std::to_string(PY_MAJOR_VERSION) + "." + std::to_string(PY_MINOR_VERSION);
  const std::string lib = std::string(kPrefix) + "/lib/python";
  const std::string paths[] = {
      lib + std::to_string(PY_MAJOR_VERSION) + std::to_string(PY_MINOR_VERSION) + ".zip",
      lib + version, lib + version + "/lib-dynload", kDistPackages};
  const std::wstring home = widen(kPrefix);
  const std::wstring program = widen(std::string(kPrefix) + "/bin/python" + version);
  st = PyConfig_SetString(&config, &config.home, home.c_str());
  if (!PyStatus_Exception(st))
    st = PyConfig_SetString(&config, &config.program_name, program.c_str());
  for (const std::string& p : paths) {
    if (PyStatus_Exception(st)) break;
    st = PyWideStringList_Append(&config.module_search_paths, widen(p).c_str());
  }
  if (!PyStatus_Exception(st)) st = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(st)) return python_status_error("starting Python", st);
  return Status::ok_status();
}

Runtime* make_runtime() {
  auto* rt = new Runtime();  // never freed: the interpreter outlives every static destructor
  rt->watchdog = new Watchdog();
  if (Py_IsInitialized()) {
    // Someone else in this process started Python: use theirs as it is.
    Gil gil;
    rt->status = load_module(rt);
    return rt;
  }
  rt->status = start_interpreter();
  if (!rt->status.ok()) return rt;
  rt->status = load_module(rt);
  PyEval_SaveThread();  // from here every caller takes the GIL with PyGILState_Ensure
  return rt;
}

const Runtime& runtime() {
  static std::once_flag once;
  static Runtime* rt = nullptr;
  std::call_once(once, [] { rt = make_runtime(); });
  return *rt;
}

// --- JSON in, text out ------------------------------------------------------------------

bool within_depth(const nlohmann::json& j, int depth) {
  if (!j.is_structured()) return true;
  if (depth >= kMaxJsonDepth) return false;
  for (const auto& item : j) {
    if (!within_depth(item, depth + 1)) return false;
  }
  return true;
}

// The JSON text of `j` ("" for null), or an error naming `what`.
Result<std::string> json_text(const nlohmann::json& j, const char* what) {
  if (j.is_null()) return std::string();
  if (!within_depth(j, 0))
    return invalid_argument("{}: nested deeper than {} levels", what, kMaxJsonDepth);
  try {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument("{}: {}", what, e.what());
  }
}

// Refuses text nested deeper than kMaxJsonDepth (counted outside strings) or not UTF-8;
// the rest of the syntax is for Python's json.loads to check.
Status check_json_text(std::string_view text, const char* what) {
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        return invalid_argument("{}: nested deeper than {} levels", what, kMaxJsonDepth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return Status::ok_status();
}

PyObject* py_text(std::string_view s) {
  return PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "strict");
}

// A (False, (message, line)) result from the module as an invalid_argument.
Status template_error(const std::string& source, PyObject* payload) {
  PyObject* message =
      PyTuple_Check(payload) && PyTuple_Size(payload) == 2 ? PyTuple_GetItem(payload, 0) : nullptr;
  const long line = message != nullptr ? PyLong_AsLong(PyTuple_GetItem(payload, 1)) : 0;
  std::optional<std::string> text;
  if (message != nullptr && PyUnicode_Check(message)) text = utf8_of(message);
  if (PyErr_Occurred()) PyErr_Clear();
  const std::string what = text ? *text : "error (no message)";
  if (line > 0) return invalid_argument("chat template {}, line {}: {}", source, line, what);
  return invalid_argument("chat template {}: {}", source, what);
}

}  // namespace

struct ChatTemplate::Impl {
  std::string source;
  PyObject* handle = nullptr;  // (jinja2.Template, template text), owned
};

ChatTemplate::ChatTemplate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ChatTemplate::~ChatTemplate() {
  if (impl_ && impl_->handle != nullptr) {
    Gil gil;
    Py_DECREF(impl_->handle);
  }
}

Result<std::unique_ptr<ChatTemplate>> ChatTemplate::compile(const std::string& text,
                                                            const std::string& source) {
  const Runtime& rt = runtime();
  if (!rt.status.ok()) return rt.status;
  Gil gil;
  PyRef arg(py_text(text));
  if (!arg) {
    PyErr_Clear();
    return invalid_argument("chat template {}: not valid UTF-8", source);
  }
  PyRef result(PyObject_CallOneArg(rt.compile_fn, arg.get()));
  if (!result || !PyTuple_Check(result.get()) || PyTuple_Size(result.get()) != 2)
    return invalid_argument("chat template {}: {}", source, take_python_error());
  PyObject* payload = PyTuple_GetItem(result.get(), 1);
  if (PyTuple_GetItem(result.get(), 0) != Py_True) return template_error(source, payload);
  auto impl = std::make_unique<Impl>();
  impl->source = source;
  Py_INCREF(payload);
  impl->handle = payload;
  return std::unique_ptr<ChatTemplate>(new ChatTemplate(std::move(impl)));
}

Result<std::string> ChatTemplate::render(const nlohmann::json& messages,
                                         const ChatTemplateOptions& options) const {
  SW_ASSIGN_OR_RETURN(std::string messages_text, json_text(messages, "messages"));
  if (messages.is_null()) messages_text = "null";
  return render_json(messages_text, options);
}

Result<std::string> ChatTemplate::render_json(std::string_view messages_json,
                                              const ChatTemplateOptions& options,
                                              std::string_view tools_json,
                                              std::string_view documents_json) const {
  std::string tools_text(tools_json), documents_text(documents_json);
  if (tools_text.empty()) {
    SW_ASSIGN_OR_RETURN(tools_text, json_text(options.tools, "tools"));
  }
  if (documents_text.empty()) {
    SW_ASSIGN_OR_RETURN(documents_text, json_text(options.documents, "documents"));
  }
  SW_ASSIGN_OR_RETURN(std::string extra_text, json_text(options.extra, "template variables"));
  SW_RETURN_IF_ERROR(check_json_text(messages_json, "messages"));
  SW_RETURN_IF_ERROR(check_json_text(tools_text, "tools"));
  SW_RETURN_IF_ERROR(check_json_text(documents_text, "documents"));

  const Runtime& rt = runtime();
  Gil gil;
  PyObject* strings[6] = {py_text(messages_json),     py_text(tools_text),
                          py_text(documents_text),    py_text(options.bos_token),
                          py_text(options.eos_token), py_text(extra_text)};
  const char* names[6] = {"messages",  "tools",     "documents",
                          "bos_token", "eos_token", "template variables"};
  for (int i = 0; i < 6; ++i) {
    if (strings[i] == nullptr) {
      PyErr_Clear();
      for (PyObject* s : strings) Py_XDECREF(s);
      return invalid_argument("chat template {}: {} are not valid UTF-8", impl_->source, names[i]);
    }
  }
  PyRef args(PyTuple_New(9));
  if (!args) {
    for (PyObject* s : strings) Py_DECREF(s);
    return internal_error("chat template {}: {}", impl_->source, take_python_error());
  }
  Py_INCREF(impl_->handle);
  PyTuple_SET_ITEM(args.get(), 0, impl_->handle);
  for (int i = 0; i < 3; ++i) PyTuple_SET_ITEM(args.get(), 1 + i, strings[i]);
  PyTuple_SET_ITEM(args.get(), 4, PyBool_FromLong(options.add_generation_prompt));
  PyTuple_SET_ITEM(args.get(), 5, PyBool_FromLong(options.continue_final_message));
  for (int i = 3; i < 6; ++i) PyTuple_SET_ITEM(args.get(), 3 + i, strings[i]);

  const uint64_t ticket = rt.watchdog->begin(options.timeout_s);
  PyRef result(PyObject_Call(rt.render_fn, args.get(), nullptr));
  const bool timed_out = rt.watchdog->end(ticket);
  if (timed_out) {
    if (!result) PyErr_Clear();
    return invalid_argument("chat template {}: rendering took longer than {} s", impl_->source,
                            options.timeout_s);
  }
  if (!result || !PyTuple_Check(result.get()) || PyTuple_Size(result.get()) != 2)
    return invalid_argument("chat template {}: {}", impl_->source, take_python_error());
  PyObject* payload = PyTuple_GetItem(result.get(), 1);
  if (PyTuple_GetItem(result.get(), 0) != Py_True) return template_error(impl_->source, payload);
  std::optional<std::string> text = utf8_of(payload);
  if (!text) {
    // A lone surrogate from a "\ud800" escape in the input has no UTF-8 form.
    return invalid_argument("chat template {}: the output is not valid text: {}", impl_->source,
                            take_python_error());
  }
  return std::move(*text);
}

Result<std::string> load_chat_template_file(const std::string& path, const std::string& name) {
  SW_ASSIGN_OR_RETURN(std::string text,
                      read_text_file(path, kMaxTemplateFileBytes, "chat template file"));
  const size_t first = text.find_first_not_of(" \t\r\n");
  const bool json_name = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  const bool looks_json = first != std::string::npos && (text[first] == '{' || text[first] == '"');
  if (!json_name && !looks_json) return text;
  // A Jinja template that opens with "{{", "{%" or "{#" is not JSON: keep it as text.
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    if (!json_name) return text;
    return invalid_argument("{}: not valid JSON", path);
  }
  if (j.is_string()) return j.get<std::string>();
  if (!j.is_object() || !j.contains("chat_template"))
    return invalid_argument("{}: JSON without a \"chat_template\" key", path);
  const nlohmann::json& t = j["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const auto& entry : t) {
      if (entry.is_object() && entry.value("name", nlohmann::json()) == name &&
          entry.contains("template") && entry["template"].is_string())
        return entry["template"].get<std::string>();
    }
    return invalid_argument("{}: \"chat_template\" has no template named \"{}\"", path, name);
  }
  return invalid_argument("{}: \"chat_template\" is {}, not a string or a list of templates", path,
                          t.type_name());
}

}  // namespace sw::tokenizer
