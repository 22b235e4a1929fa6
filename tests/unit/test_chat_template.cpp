// ChatTemplate against transformers: the real model templates of llama.cpp's models/templates
// × the conversations of tests/tokenizer/make_chat_fixtures.py, rendered by transformers'
// apply_chat_template, must come out byte for byte (or fail where Python fails); then the
// environment's pieces one by one, the sandbox, limits, threads and load_chat_template_file.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include "tests/unit/run_command.h"
#include "tokenizer/chat_template.h"

namespace sw::tokenizer {
namespace {

// The interpreter must ignore the environment: a PYTHONHOME that does not exist and a
// PYTHONPATH holding another Jinja2 would break or change a Python that reads them. Set
// before the first ChatTemplate of this process; child processes get them removed.
[[maybe_unused]] const bool kHostileEnvironment = [] {
  setenv("PYTHONHOME", "/nonexistent/python-home", 1);
  setenv("PYTHONPATH", "/nonexistent/python-path", 1);
  return true;
}();
constexpr const char* kCleanEnv = "env -u PYTHONHOME -u PYTHONPATH ";

std::unique_ptr<ChatTemplate> compile_ok(const std::string& text) {
  auto t = ChatTemplate::compile(text, "test.jinja");
  EXPECT_TRUE(t.ok()) << t.status().to_string();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::string render_ok(const std::string& text, const std::string& messages_json,
                      const ChatTemplateOptions& options = {}) {
  auto t = compile_ok(text);
  if (!t) return "<no template>";
  auto r = t->render_json(messages_json, options);
  EXPECT_TRUE(r.ok()) << r.status().to_string();
  return r.ok() ? *r : "<error>";
}

Status render_error(const std::string& text, const std::string& messages_json,
                    const ChatTemplateOptions& options = {}) {
  auto t = compile_ok(text);
  if (!t) return internal_error("no template");
  auto r = t->render_json(messages_json, options);
  EXPECT_FALSE(r.ok()) << "rendered: " << *r;
  return r.ok() ? Status() : r.status();
}

constexpr const char* kHello = R"([{"role": "user", "content": "Hello"}])";

// --- Against transformers ---------------------------------------------------------------

struct Fixtures {
  std::string expected;   // expected.jsonl
  std::string templates;  // the *.jinja folder
  std::string why_not;    // set when they could not be made
};

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  std::string p(buf, static_cast<size_t>(n));
  return p.substr(0, p.rfind('/'));
}

std::string last_line(const std::string& s) {
  std::istringstream in(s);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  return last;
}

// tests/pyref/setup.sh (the venv with transformers, and llama.cpp's templates), then
// make_chat_fixtures.py into the build folder; made once per run.
Fixtures make_fixtures() {
  Fixtures f;
  const std::string src = testing_paths::source_dir();
  const std::string out_dir = exe_dir() + "/chat_template_fixtures";
  mkdir(out_dir.c_str(), 0755);
  const std::string log = out_dir + "/setup.log";
  // Its progress (stderr) goes to the log; the folder is the last line of stdout.
  auto setup = testing_util::run_command("(" + std::string(kCleanEnv) + "bash " + src +
                                         "/tests/pyref/setup.sh 2>" + log + ")");
  const std::string pyref = last_line(setup.out);
  if (setup.exit_code != 0 || pyref.empty()) {
    f.why_not = "tests/pyref/setup.sh failed (exit " + std::to_string(setup.exit_code) + "; see " +
                log + "): " + setup.out;
    return f;
  }
  f.templates = pyref + "/llama-cpp-python/vendor/llama.cpp/models/templates";
  f.expected = out_dir + "/expected.jsonl";
  std::remove(f.expected.c_str());
  auto gen = testing_util::run_command(std::string(kCleanEnv) + pyref + "/venv/bin/python " + src +
                                       "/tests/tokenizer/make_chat_fixtures.py --templates " +
                                       f.templates + " --out " + f.expected);
  if (gen.exit_code != 0) {
    f.why_not =
        "make_chat_fixtures.py failed (exit " + std::to_string(gen.exit_code) + "): " + gen.out;
  }
  return f;
}

const Fixtures& fixtures() {
  static const Fixtures f = make_fixtures();
  return f;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ChatTemplateTest, RealTemplatesMatchTransformers) {
  const Fixtures& f = fixtures();
  if (!f.why_not.empty()) {
    const char* ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true") FAIL() << f.why_not;
    GTEST_SKIP() << "no transformers reference: " << f.why_not;
  }
  std::ifstream in(f.expected);
  ASSERT_TRUE(in) << f.expected;
  std::map<std::string, std::unique_ptr<ChatTemplate>> compiled;
  std::map<std::string, std::string> compile_errors;
  int renders = 0, outputs = 0, errors = 0, mismatches = 0;
  std::string line;
  while (std::getline(in, line)) {
    const nlohmann::json rec = nlohmann::json::parse(line);
    const std::string name = rec["template"];
    const std::string where = name + " × " + rec["case"].get<std::string>();
    if (!compiled.count(name) && !compile_errors.count(name)) {
      auto t = ChatTemplate::compile(read_file(f.templates + "/" + name), name);
      if (t.ok()) {
        compiled[name] = std::move(t).value();
      } else {
        compile_errors[name] = t.status().to_string();
      }
    }
    ChatTemplateOptions opt;
    const auto& o = rec["options"];
    opt.add_generation_prompt = o["add_generation_prompt"];
    opt.continue_final_message = o["continue_final_message"];
    opt.bos_token = o["bos_token"];
    opt.eos_token = o["eos_token"];
    opt.extra = o["extra"];
    Result<std::string> got =
        compile_errors.count(name)
            ? Result<std::string>(invalid_argument("{}", compile_errors[name]))
            : compiled[name]->render_json(rec["messages_json"].get<std::string>(), opt,
                                          rec["tools_json"].get<std::string>(),
                                          rec["documents_json"].get<std::string>());
    ++renders;
    bool match;
    if (rec.contains("output")) {
      ++outputs;
      match = got.ok() && *got == rec["output"].get<std::string>();
      if (!match && mismatches < 20) {
        ADD_FAILURE() << where << ": transformers rendered\n"
                      << rec["output"].get<std::string>() << "\n--- ChatTemplate gave\n"
                      << (got.ok() ? *got : got.status().to_string());
      }
    } else {
      ++errors;
      match = !got.ok() && got.status().code() == StatusCode::kInvalidArgument;
      if (!match && mismatches < 20) {
        ADD_FAILURE() << where << ": transformers failed (" << rec["error"].get<std::string>()
                      << ") but ChatTemplate gave "
                      << (got.ok() ? "\n" + *got : got.status().to_string());
      }
    }
    if (!match) ++mismatches;
  }
  std::printf("chat templates: %zu templates, %d renders (%d outputs, %d errors), %d differ\n",
              compiled.size() + compile_errors.size(), renders, outputs, errors, mismatches);
  EXPECT_EQ(mismatches, 0);
  EXPECT_GE(compiled.size(), 60u) << "the templates folder looks incomplete";
  EXPECT_GE(outputs, 1000) << "too few successful renders to mean anything";
}

// --- transformers' environment, piece by piece ------------------------------------------

TEST(ChatTemplateTest, RaiseExceptionGivesTheTemplatesMessage) {
  const Status s = render_error(
      "{% for m in messages %}\n{% if m.role == 'user' %}\n"
      "{{ raise_exception('Only assistants here, ' + m.content + '!') }}\n{% endif %}\n"
      "{% endfor %}",
      kHello);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("Only assistants here, Hello!"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("test.jinja, line 3"), std::string::npos) << s.message();
}

TEST(ChatTemplateTest, SyntaxErrorNamesSourceAndLine) {
  auto t =
      ChatTemplate::compile("line one\n{% for m in messages %}\n{{ m.content }}\n", "my.jinja");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(t.status().message().find("my.jinja"), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("line 3"), std::string::npos) << t.status().message();
  EXPECT_NE(t.status().message().find("endfor"), std::string::npos) << t.status().message();

  auto filter = ChatTemplate::compile("{{ x | no_such_filter }}", "f.jinja");
  ASSERT_FALSE(filter.ok());
  EXPECT_NE(filter.status().message().find("no_such_filter"), std::string::npos);
}

TEST(ChatTemplateTest, RenderErrorsAreInvalidArgument) {
  // Undefined attribute access and Python type errors.
  Status s = render_error("{{ messages[0].content.nope.deeper }}", kHello);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("nope"), std::string::npos) << s.message();
  s = render_error("{{ messages[0].content + 1 }}", kHello);
  EXPECT_NE(s.message().find("TypeError"), std::string::npos) << s.message();
  // transformers' own checks.
  EXPECT_NE(render_error("x", "[]").message().find("empty conversation"), std::string::npos);
  ChatTemplateOptions both;
  both.continue_final_message = true;
  EXPECT_NE(
      render_error("{{ messages[0].content }}", kHello, both).message().find("not compatible"),
      std::string::npos);
  EXPECT_NE(render_error("x", R"(["not a message"])").message().find("should be dicts"),
            std::string::npos);
  auto t = compile_ok("x");
  ChatTemplateOptions bad_tools;
  bad_tools.tools = nlohmann::json::array({"not a schema"});
  EXPECT_FALSE(t->render(nlohmann::json::parse(kHello), bad_tools).ok());
  EXPECT_FALSE(t->render_json("[{\"role\": ", {}).ok()) << "malformed JSON";
}

TEST(ChatTemplateTest, StrftimeNowIsLocalTime) {
  auto today = [] {
    std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    char buf[64];
    std::strftime(buf, sizeof(buf), "%d %b %Y", &tm);
    return std::string(buf);
  };
  const std::string before = today();
  const std::string got = render_ok("{{ strftime_now('%d %b %Y') }}", kHello);
  const std::string after = today();
  EXPECT_TRUE(got == before || got == after) << got << " vs " << before;
}

TEST(ChatTemplateTest, TojsonKeepsNonAsciiAndHtmlAndTakesOptions) {
  const std::string msgs =
      R"([{"role": "user", "content": "héllo 世界 🙂 <b>&'\"", "z": 1, "a": [1, 2.5, null, true]}])";
  // Jinja's own tojson would write \u00e9 and \u003c; transformers' writes them as they are.
  EXPECT_EQ(render_ok("{{ messages[0].content | tojson }}", msgs),
            R"("héllo 世界 🙂 <b>&'\"")");
  EXPECT_EQ(
      render_ok("{{ messages[0] | tojson }}", msgs),
      R"({"role": "user", "content": "héllo 世界 🙂 <b>&'\"", "z": 1, "a": [1, 2.5, null, true]})");
  EXPECT_EQ(render_ok("{{ messages[0].a | tojson(indent=2) }}", msgs),
            "[\n  1,\n  2.5,\n  null,\n  true\n]");
  EXPECT_EQ(
      render_ok("{{ messages[0] | tojson(sort_keys=true, separators=(',', ':')) }}", msgs),
      R"({"a":[1,2.5,null,true],"content":"héllo 世界 🙂 <b>&'\"","role":"user","z":1})");
  EXPECT_EQ(render_ok("{{ messages[0].content | tojson(ensure_ascii=true) }}", msgs),
            R"("h\u00e9llo \u4e16\u754c \ud83d\ude42 <b>&'\"")");
}

TEST(ChatTemplateTest, TrimBlocksAndLstripBlocks) {
  EXPECT_EQ(render_ok("<a>\n  {% if true %}\n  x\n  {% endif %}\n</a>", kHello), "<a>\n  x\n</a>");
  EXPECT_EQ(render_ok("{% for m in messages %}\n  [{{ m.role }}]\n{% endfor %}\nend", kHello),
            "  [user]\nend");
  // {%- and -%} still strip, {%+ keeps the indent.
  EXPECT_EQ(render_ok("a  {%- if true -%}  b  {%- endif %}\n  {%+ if true %}c{% endif %}", kHello),
            "ab  c");
}

TEST(ChatTemplateTest, LoopControls) {
  EXPECT_EQ(render_ok("{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}"
                      "{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
                      kHello),
            "0134");
}

TEST(ChatTemplateTest, VariablesAndSpecialTokens) {
  ChatTemplateOptions o;
  o.bos_token = "<s>";
  o.eos_token = "</s>";
  o.add_generation_prompt = false;
  o.extra = {{"enable_thinking", false}, {"eos_token", "<|end|>"}};
  EXPECT_EQ(render_ok("{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|"
                      "{{ enable_thinking }}|{{ tools is none }}|{{ documents is none }}",
                      kHello, o),
            "<s>|<|end|>|False|False|True|True");
  // An empty token is a token the tokenizer does not have: undefined, as in transformers.
  EXPECT_EQ(render_ok("{{ bos_token is defined }}", kHello), "False");
  // Keys whose value is null are dropped; reasoning_content is also given as `thinking`.
  EXPECT_EQ(
      render_ok("{{ messages[0] | tojson }}",
                R"([{"role": "assistant", "content": null, "reasoning": "r"}])"),
      R"({"thinking": "r", "role": "assistant", "reasoning": "r", "reasoning_content": "r"})");
}

TEST(ChatTemplateTest, KeyOrderFollowsTheJsonText) {
  const std::string tools =
      R"([{"type": "function", "function": {"name": "f", "description": "d"}}])";
  auto t = compile_ok("{{ tools | tojson }}");
  auto kept = t->render_json(kHello, {}, tools);
  ASSERT_TRUE(kept.ok()) << kept.status().to_string();
  EXPECT_EQ(*kept, tools);
  // nlohmann::json sorts keys: the same tools through render() come out sorted.
  ChatTemplateOptions o;
  o.tools = nlohmann::json::parse(tools);
  auto sorted = t->render(nlohmann::json::parse(kHello), o);
  ASSERT_TRUE(sorted.ok()) << sorted.status().to_string();
  EXPECT_EQ(*sorted, R"([{"function": {"description": "d", "name": "f"}, "type": "function"}])");
}

TEST(ChatTemplateTest, ContinueFinalMessageCutsAfterTheMessage) {
  const std::string tpl =
      "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
      "{% if add_generation_prompt %}<|assistant|>\n{% endif %}";
  const std::string msgs =
      R"([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Once upon "}])";
  ChatTemplateOptions o;
  o.add_generation_prompt = false;
  o.continue_final_message = true;
  EXPECT_EQ(render_ok(tpl, msgs, o), "<|user|>\nHi<|end|>\n<|assistant|>\nOnce upon ");
  // A template that strips the content loses the trailing space, as transformers does.
  const std::string trimming =
      "{% for m in messages %}[{{ m.role }}]{{ m.content | trim }}[end]{% endfor %}";
  EXPECT_EQ(render_ok(trimming, msgs, o), "[user]Hi[end][assistant]Once upon");
  EXPECT_NE(render_error("{% for m in messages %}{{ m.role }}{% endfor %}", msgs, o)
                .message()
                .find("continue_final_message"),
            std::string::npos);
}

TEST(ChatTemplateTest, GenerationBlocksRenderTheirBody) {
  EXPECT_EQ(render_ok("{% for m in messages %}{% generation %}[{{ m.content }}]"
                      "{% endgeneration %}{% endfor %}",
                      kHello),
            "[Hello]");
}

TEST(ChatTemplateTest, NamespaceAndDict) {
  EXPECT_EQ(
      render_ok("{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                "{% endfor %}{{ ns.n }} {{ dict(a=1) | tojson }}",
                kHello),
      "1 {\"a\": 1}");
  // Jinja2 3.1.5's fixes, which Debian's 3.1.2 lacks (see also SandboxRefusesPythonInternals
  // for list.pop): `|int` of a float too large gives the default; a name set in every branch
  // of an if still reads the outer value before the set (#1253).
  EXPECT_EQ(render_ok("{{ '1e999' | int }} {{ '42.7' | int }}", kHello), "0 42");
  EXPECT_EQ(render_ok("{% set x = 'outer' %}{% for i in [1] %}{% if i %}{{ x }}{% set x = 'a' %}"
                      "{% else %}{% set x = 'b' %}{% endif %}{% endfor %}",
                      kHello),
            "outer");
}

// --- The sandbox and the limits ---------------------------------------------------------

TEST(ChatTemplateTest, SandboxRefusesPythonInternals) {
  // Unsafe attributes are undefined (empty when printed, an error when used further).
  for (const char* tpl : {
           "{{ ''.__class__.__mro__ }}",
           "{{ ''.__class__.__mro__[1].__subclasses__() }}",
           "{{ messages.__class__ }}",
           "{{ cycler.__init__.__globals__ }}",
           "{{ raise_exception.__globals__ }}",
           "{{ strftime_now.__globals__['datetime'] }}",
           "{{ '{0.__class__}'.format(1) }}",
           "{{ messages | attr('__class__') }}",
       }) {
    SCOPED_TRACE(tpl);
    auto t = compile_ok(tpl);
    auto r = t->render_json(kHello, {});
    if (r.ok()) {
      EXPECT_EQ(*r, "");
    } else {
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().to_string();
    }
  }
  EXPECT_NE(render_error("{{ ''.__class__.__mro__ }}", kHello).message().find("unsafe"),
            std::string::npos);
  // Mutation, private namespace attributes and memory bombs are errors.
  for (const char* tpl : {
           "{{ messages.append(1) }}",
           "{{ messages.pop() }}",          // refused since Jinja2 3.1.5, as transformers needs
           "{{ messages[0].update({}) }}",  // immutable sandbox
           "{% set ns = namespace(_x=1) %}",
           "{{ 'a' * 10**10 }}",
           "{{ [1, 2] * 100000000 }}",
           "{{ 3 ** 99999999 }}",
       }) {
    SCOPED_TRACE(tpl);
    EXPECT_EQ(render_error(tpl, kHello).code(), StatusCode::kInvalidArgument);
  }
  // range() is bounded by the sandbox.
  EXPECT_NE(render_error("{% for i in range(10**9) %}{% endfor %}", kHello).message().find("range"),
            std::string::npos);
}

TEST(ChatTemplateTest, RunawayTemplateTimesOutAndOthersStillRender) {
  auto slow = compile_ok(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
      "{% endfor %}");
  ChatTemplateOptions o;
  o.timeout_s = 1.0;
  Result<std::string> slow_result = std::string();
  const auto start = std::chrono::steady_clock::now();
  Result<std::string> after = std::string();
  std::thread runaway([&] {
    slow_result = slow->render_json(kHello, o);
    // The thread that was stopped renders normally afterwards (no stale TimeoutError).
    after = compile_ok("{{ messages[0].content }}")->render_json(kHello, o);
  });
  // Meanwhile another thread renders: the runaway gives up the GIL at Python's switch
  // interval.
  EXPECT_EQ(render_ok("{{ messages[0].content }}", kHello), "Hello");
  runaway.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(slow_result.ok());
  EXPECT_NE(slow_result.status().message().find("longer than"), std::string::npos)
      << slow_result.status().to_string();
  EXPECT_LT(seconds, 30);
  ASSERT_TRUE(after.ok()) << after.status().to_string();
  EXPECT_EQ(*after, "Hello");
}

TEST(ChatTemplateTest, HostileInputsAreErrorsNotCrashes) {
  auto t = compile_ok("{{ messages | tojson }}");
  // Deep nesting, as text and as nlohmann::json.
  const std::string deep_text = std::string(100000, '[') + std::string(100000, ']');
  auto r = t->render_json(deep_text, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("nested deeper"), std::string::npos);
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 100000; ++i) deep = nlohmann::json::array({std::move(deep)});
  EXPECT_FALSE(t->render(deep, {}).ok());
  // Moderate nesting is fine.
  EXPECT_TRUE(t->render_json("[{\"role\": \"user\", \"content\": " + std::string(100, '[') +
                                 std::string(100, ']') + "}]",
                             {})
                  .ok());
  // Invalid UTF-8, as text and in nlohmann::json.
  EXPECT_FALSE(t->render_json("[{\"role\": \"user\", \"content\": \"\xff\xfe\"}]", {}).ok());
  EXPECT_FALSE(t->render(nlohmann::json::array({{{"content", "\xc3"}}}), {}).ok());
  EXPECT_FALSE(ChatTemplate::compile("bad \xff utf-8", "x").ok());
  // A lone surrogate has no UTF-8 form for the output.
  EXPECT_FALSE(
      compile_ok("{{ messages[0].content }}")->render_json(R"([{"content": "\ud800"}])", {}).ok());
  // A large message goes through intact.
  const std::string big(8 << 20, 'x');
  auto echo = compile_ok("{{ messages[0].content }}");
  auto out = echo->render(nlohmann::json::array({{{"role", "user"}, {"content", big}}}), {});
  ASSERT_TRUE(out.ok()) << out.status().to_string();
  EXPECT_EQ(out->size(), big.size());
}

// --- Threads ----------------------------------------------------------------------------

TEST(ChatTemplateTest, ConcurrentRendersMatchSerialOnes) {
  const std::vector<std::string> templates = {
      "{{ bos_token }}{% for m in messages %}<|start|>{{ m.role }}\n{{ m.content | trim }}<|end|>"
      "{% endfor %}{% if add_generation_prompt %}<|start|>assistant\n{% endif %}",
      "{% for m in messages %}{{ m | tojson(indent=1) }}{% if not loop.last %},{% endif %}"
      "{% endfor %}{{ tools | tojson }}",
      "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + m.content | length "
      "%}"
      "{% endfor %}{{ ns.n }}"};
  std::vector<std::unique_ptr<ChatTemplate>> compiled;
  for (const auto& t : templates) compiled.push_back(compile_ok(t));
  auto conversation = [](int i) {
    return "[{\"role\": \"system\", \"content\": \"sys " + std::to_string(i) +
           "\"}, {\"role\": \"user\", \"content\": \"héllo " + std::string(i % 17, 'x') + "\"}]";
  };
  ChatTemplateOptions o;
  o.bos_token = "<s>";
  o.tools = nlohmann::json::array({{{"name", "f"}}});
  constexpr int kCases = 60;
  std::vector<std::string> serial;
  for (int i = 0; i < kCases; ++i) {
    auto r = compiled[i % compiled.size()]->render_json(conversation(i), o);
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    serial.push_back(*r);
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (int k = 0; k < kCases; ++k) {
          const int i = (k + t * 7) % kCases;
          auto r = compiled[i % compiled.size()]->render_json(conversation(i), o);
          if (!r.ok() || *r != serial[i]) ++wrong;
        }
      }
    });
  }
  // Templates are made and dropped meanwhile too.
  for (int i = 0; i < 20; ++i) compile_ok("{{ messages | length }}");
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// --- load_chat_template_file ------------------------------------------------------------

class LoadChatTemplateFileTest : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + "chat_template_" + name;
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
};

TEST_F(LoadChatTemplateFileTest, ReadsJinjaAndJson) {
  const std::string jinja = "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}";
  auto plain = load_chat_template_file(write("plain.jinja", jinja));
  ASSERT_TRUE(plain.ok()) << plain.status().to_string();
  EXPECT_EQ(*plain, jinja);
  auto str = load_chat_template_file(write("str.json", nlohmann::json(jinja).dump()));
  ASSERT_TRUE(str.ok()) << str.status().to_string();
  EXPECT_EQ(*str, jinja);
  auto cfg = load_chat_template_file(
      write("tokenizer_config.json",
            nlohmann::json{{"bos_token", "<s>"}, {"chat_template", jinja}}.dump(2)));
  ASSERT_TRUE(cfg.ok()) << cfg.status().to_string();
  EXPECT_EQ(*cfg, jinja);
  const std::string named =
      write("named.json", nlohmann::json{{"chat_template",
                                          {{{"name", "default"}, {"template", "D"}},
                                           {{"name", "tool_use"}, {"template", "T"}}}}}
                              .dump());
  EXPECT_EQ(*load_chat_template_file(named), "D");
  EXPECT_EQ(*load_chat_template_file(named, "tool_use"), "T");
}

TEST_F(LoadChatTemplateFileTest, ErrorsNameTheFile) {
  const std::string missing = ::testing::TempDir() + "chat_template_missing.jinja";
  auto r = load_chat_template_file(missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(missing), std::string::npos);
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"no_key.json", R"({"bos_token": "<s>"})"},
           {"bad.json", "{not json"},
           {"number.json", R"({"chat_template": 5})"},
           {"no_default.json", R"({"chat_template": [{"name": "rag", "template": "R"}]})"}}) {
    const std::string path = write(name, text);
    auto e = load_chat_template_file(path);
    ASSERT_FALSE(e.ok()) << name;
    EXPECT_EQ(e.status().code(), StatusCode::kInvalidArgument) << name;
    EXPECT_NE(e.status().message().find(path), std::string::npos) << e.status().to_string();
  }
}

}  // namespace
}  // namespace sw::tokenizer
