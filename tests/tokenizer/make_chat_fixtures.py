#!/usr/bin/env python3
# Expected chat-template renders for test_chat_template: every *.jinja in --templates (the real
# model templates shipped in llama.cpp's models/templates) × the conversations below, rendered
# by transformers' own apply_chat_template(tokenize=False), one JSON object a line:
#   {"template", "case", "messages_json", "tools_json", "documents_json", "options",
#    "output" | "error"}
# Add a conversation to CASES; the C++ test needs no change. Run with the pyref venv's python
# (tests/pyref/setup.sh).
import argparse
import json
import os
import sys
import warnings

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city, in °C or °F.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
SEARCH_TOOL = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "max_results": {"type": "integer"}},
            "required": ["query"],
        },
    },
}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def tool_turns(arguments, content=None, city="Paris"):
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
         "content": '{"temperature": 22, "unit": "celsius"}'},
    ]


# (name, messages, options); options: add_generation_prompt, continue_final_message, tools,
# documents, bos_token, eos_token ("" = the tokenizer has none), extra (template variables).
CASES = [
    ("system_user", [SYSTEM, {"role": "user", "content": "Hello!"}], {}),
    ("system_user_no_prompt", [SYSTEM, {"role": "user", "content": "Hello!"}],
     {"add_generation_prompt": False}),
    ("user_only", [{"role": "user", "content": "What is 2 + 2?"}], {}),
    ("multi_turn", [
        SYSTEM,
        {"role": "user", "content": "Hi, who are you?"},
        {"role": "assistant", "content": "I am an assistant."},
        {"role": "user", "content": "Tell me a joke."},
    ], {}),
    ("multi_turn_ends_assistant", [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ], {"add_generation_prompt": False}),
    ("continue_final_message", [
        {"role": "user", "content": "Write a haiku about rain."},
        {"role": "assistant", "content": "Soft rain on the roof,"},
    ], {"add_generation_prompt": False, "continue_final_message": True}),
    ("tools_no_calls", [SYSTEM, {"role": "user", "content": "Weather in Oslo?"}],
     {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ("tool_calls_dict_arguments", tool_turns({"location": "Paris", "unit": "celsius"}),
     {"tools": [WEATHER_TOOL]}),
    ("tool_calls_string_arguments", tool_turns('{"location": "Paris"}'),
     {"tools": [WEATHER_TOOL]}),
    ("tool_calls_empty_content", tool_turns({"location": "Zürich"}, content="", city="Zürich") + [
        {"role": "assistant", "content": "It is 22 °C in Zürich."},
        {"role": "user", "content": "Thanks!"},
    ], {"tools": [WEATHER_TOOL, SEARCH_TOOL]}),
    ("unicode", [
        {"role": "system", "content": "Réponds en français. 日本語も話せます。"},
        {"role": "user", "content": "Привет 👋🏽 — ¿qué tal? مرحبا e\u0301 \u00a0tab\there\nnewline"},
        {"role": "assistant", "content": "你好！🙂 <b>&amp;</b> \"quotes\" 'single'"},
        {"role": "user", "content": "Ünïcödé ✓ \u200b zero-width"},
    ], {}),
    ("empty_content", [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": ""},
    ], {}),
    ("documents", [{"role": "user", "content": "Summarise the documents."}],
     {"documents": [{"title": "Tides", "text": "The moon causes tides."},
                    {"title": "Sun", "text": "The sun is a star."}]}),
    ("reasoning_content", [
        {"role": "user", "content": "What is 3 * 7?"},
        {"role": "assistant", "content": "21", "reasoning_content": "3 times 7 is 21."},
        {"role": "user", "content": "And 3 * 8?"},
    ], {"extra": {"enable_thinking": False}}),
    ("enable_thinking", [{"role": "user", "content": "Think hard: 12 * 12?"}],
     {"extra": {"enable_thinking": True, "reasoning_effort": "high"}}),
    ("content_parts", [
        {"role": "user", "content": [{"type": "text", "text": "Part one."},
                                     {"type": "text", "text": "Part two."}]},
    ], {}),
    ("no_special_tokens", [SYSTEM, {"role": "user", "content": "Hello!"}],
     {"bos_token": "", "eos_token": ""}),
    ("roles_not_alternating", [
        {"role": "user", "content": "One"},
        {"role": "user", "content": "Two"},
    ], {}),
    ("assistant_first", [{"role": "assistant", "content": "I speak first."}], {}),
]

DEFAULTS = {"add_generation_prompt": True, "continue_final_message": False, "tools": None,
            "documents": None, "bos_token": "<s>", "eos_token": "</s>", "extra": {}}


def make_tokenizer(bos, eos):
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    kwargs = {}
    if bos:
        kwargs["bos_token"] = bos
    if eos:
        kwargs["eos_token"] = eos
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--templates", required=True, help="folder of *.jinja chat templates")
    parser.add_argument("--out", required=True, help="expected.jsonl to write")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.logging.set_verbosity_error()
    names = sorted(n for n in os.listdir(args.templates) if n.endswith(".jinja"))
    if not names:
        sys.exit(f"no *.jinja templates in {args.templates}")
    tokenizers_by_tokens = {}
    lines = 0
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        for name in names:
            with open(os.path.join(args.templates, name), encoding="utf-8") as f:
                template = f.read()
            for case, messages, overrides in CASES:
                options = {**DEFAULTS, **overrides}
                key = (options["bos_token"], options["eos_token"])
                if key not in tokenizers_by_tokens:
                    tokenizers_by_tokens[key] = make_tokenizer(*key)
                tok = tokenizers_by_tokens[key]
                # The C++ side gets the same JSON text, so both see the same key order.
                messages_json = json.dumps(messages, ensure_ascii=False)
                tools_json = "" if options["tools"] is None else json.dumps(options["tools"])
                documents_json = ("" if options["documents"] is None
                                  else json.dumps(options["documents"]))
                record = {
                    "template": name, "case": case, "messages_json": messages_json,
                    "tools_json": tools_json, "documents_json": documents_json,
                    "options": {k: options[k] for k in ("add_generation_prompt",
                                                        "continue_final_message", "bos_token",
                                                        "eos_token", "extra")},
                }
                try:
                    record["output"] = tok.apply_chat_template(
                        json.loads(messages_json),
                        tools=json.loads(tools_json) if tools_json else None,
                        documents=json.loads(documents_json) if documents_json else None,
                        chat_template=template,
                        add_generation_prompt=options["add_generation_prompt"],
                        continue_final_message=options["continue_final_message"],
                        tokenize=False,
                        **options["extra"],
                    )
                except Exception as e:  # the C++ side must fail too
                    record["error"] = f"{type(e).__name__}: {e}"[:500]
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                lines += 1
    os.replace(tmp, args.out)
    print(f"{args.out}: {lines} renders of {len(names)} templates x {len(CASES)} conversations",
          file=sys.stderr)


if __name__ == "__main__":
    main()
