#!/usr/bin/env python3
"""Build the committed test tokenizer under fixtures/tokenizer/.

Trains a small byte-level BPE tokenizer (HF `tokenizers`) on the text of the real
Hermes captures in fixtures/hermes-<version>/home (system prompts, tool definitions as
the chat template renders them, message texts, tool calls, stored responses) and writes
two layouts that must render identically:

  fixtures/tokenizer/chatml/          tokenizer.json, tokenizer_config.json (no
                                      chat_template key), chat_template.jinja
  fixtures/tokenizer/chatml-config/   tokenizer.json, tokenizer_config.json whose
                                      chat_template is a list of named templates
                                      ("default" without the tools section, "tool_use")

Deterministic: single thread, sorted and de-duplicated inputs, fixed trainer settings.
Run through scripts/tokenizer.sh fixture (it sets up the venv and the environment).
"""
import glob
import json
import os
import sqlite3
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CAPTURES = ["fixtures/hermes-0.13.0/home", "fixtures/hermes-0.19.0/home"]
OUT = "fixtures/tokenizer"
VOCAB_SIZE = 6144
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MODEL_MAX_LENGTH = 32768

# --------------------------------------------------------------------------------------
# The chat template. Our own ChatML-style template; "tool_use" is this text, "default"
# is the same without the tools section (the part between the two marker comments).
# --------------------------------------------------------------------------------------
TOOLS_BEGIN = "{#- tools section: begin #}\n"
TOOLS_END = "{#- tools section: end #}\n"

TEMPLATE = r"""{#- hermes-harvest fixture chat template: ChatML turns with Hermes-style tool calls.
    Written for the hermes-harvest test fixtures (it is not any model's template).
    transformers compiles it with trim_blocks=True and lstrip_blocks=True: block tags sit
    on their own lines and every byte of output comes from a {{ }} expression. -#}
{%- macro text_of(content) %}
    {%- if content is string %}
        {{- content }}
    {%- elif content is iterable and content is not mapping %}
        {%- for part in content %}
            {%- if part.type == 'text' %}
                {{- part.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
{%- set ns = namespace(system='', prev_role='') %}
{%- for message in messages %}
    {%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}
        {{- raise_exception('Unsupported role: ' ~ message.role) }}
    {%- elif message.role == 'system' and not loop.first %}
        {{- raise_exception('Only the first message may be a system message') }}
    {%- endif %}
{%- endfor %}
{%- if messages and messages[0].role == 'system' %}
    {%- set ns.system = text_of(messages[0].content).strip() %}
{%- endif %}
{%- if add_date %}
    {%- set ns.system = ('Today is ' ~ strftime_now('%d %B %Y') ~ '.\n\n' ~ ns.system).strip() %}
{%- endif %}
{%- if ns.system or tools %}
    {{- '<|im_start|>system\n' ~ ns.system }}
{#- tools section: begin #}
    {%- if tools %}
        {%- if ns.system %}
            {{- '\n\n' }}
        {%- endif %}
        {{- '# Tools\n\nYou can call the functions whose signatures are listed in <tools></tools>, one JSON object per line:\n<tools>' }}
        {%- for tool in tools %}
            {{- '\n' ~ tool | tojson }}
        {%- endfor %}
        {{- '\n</tools>\n\nTo call a function, write one <tool_call></tool_call> block per call, holding a JSON object with its name and arguments:\n<tool_call>\n{"name": <function-name>, "arguments": <arguments-object>}\n</tool_call>' }}
    {%- endif %}
{#- tools section: end #}
    {{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- continue %}
    {%- endif %}
    {%- if message.role == 'user' %}
        {{- '<|im_start|>user\n' ~ text_of(message.content) ~ '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant\n' }}
        {%- generation %}
            {%- set content = text_of(message.content) %}
            {{- content }}
            {%- if message.tool_calls %}
                {%- for tool_call in message.tool_calls %}
                    {%- set call = tool_call.function if tool_call.function is defined else tool_call %}
                    {%- if content or not loop.first %}
                        {{- '\n' }}
                    {%- endif %}
                    {{- '<tool_call>\n{"name": ' ~ call.name | tojson ~ ', "arguments": ' }}
                    {%- if call.arguments is string and call.arguments.strip().startswith('{') %}
                        {{- call.arguments }}
                    {%- else %}
                        {{- call.arguments | tojson }}
                    {%- endif %}
                    {{- '}\n</tool_call>' }}
                {%- endfor %}
            {%- endif %}
            {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\n' }}
    {%- else %}
        {%- if ns.prev_role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' ~ text_of(message.content) ~ '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
    {%- set ns.prev_role = message.role %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


def default_template(template):
    start = template.index(TOOLS_BEGIN)
    end = template.index(TOOLS_END) + len(TOOLS_END)
    return template[:start] + template[end:]


# --------------------------------------------------------------------------------------
# Corpus: the text of the captures.
# --------------------------------------------------------------------------------------
def tojson(value):
    # What transformers' `tojson` filter prints (json.dumps with its defaults but no ASCII escaping).
    return json.dumps(value, ensure_ascii=False)


def content_text(content):
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def message_texts(message):
    out = content_text(message.get("content"))
    for key in ("reasoning", "reasoning_content"):
        if isinstance(message.get(key), str):
            out.append(message[key])
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        if isinstance(fn.get("name"), str):
            out.append(fn["name"])
        args = fn.get("arguments")
        if isinstance(args, str):
            out.append(args)
        elif args is not None:
            out.append(tojson(args))
    return out


def load_db(path):
    db = sqlite3.connect(":memory:")
    with open(path, encoding="utf-8") as f:
        db.executescript(f.read())
    return db


def collect_corpus():
    texts = set()
    for home in CAPTURES:
        home_abs = os.path.join(REPO, home)
        for path in sorted(glob.glob(os.path.join(home_abs, "sessions", "session_*.json"))):
            with open(path, encoding="utf-8") as f:
                snap = json.load(f)
            if isinstance(snap.get("system_prompt"), str):
                texts.add(snap["system_prompt"])
            for tool in snap.get("tools") or []:
                texts.add(tojson(tool))
            for message in snap.get("messages") or []:
                texts.update(message_texts(message))
        state = load_db(os.path.join(home_abs, "state.db.sql"))
        for (prompt,) in state.execute("SELECT system_prompt FROM sessions WHERE system_prompt IS NOT NULL"):
            texts.add(prompt)
        for row in state.execute("SELECT content, tool_calls, reasoning FROM messages"):
            texts.update(t for t in row if isinstance(t, str))
        responses = load_db(os.path.join(home_abs, "response_store.db.sql"))
        for (data,) in responses.execute("SELECT data FROM responses"):
            texts.add(data)
    texts.add(TEMPLATE)
    texts.discard("")
    return sorted(texts)


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------
def train(corpus):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer, length=len(corpus))
    return tok


def write_json(path, value):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(value, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_text(path, text):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def tokenizer_config(chat_template=None):
    config = {
        "added_tokens_decoder": {},
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    for i, token in enumerate(SPECIAL_TOKENS):
        config["added_tokens_decoder"][str(i)] = {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def main():
    os.chdir(REPO)
    corpus = collect_corpus()
    tok = train(corpus)
    for i, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == i, (token, tok.token_to_id(token))
    tokenizer_json = tok.to_str(pretty=True) + "\n"
    tool_use = TEMPLATE
    default = default_template(TEMPLATE)
    assert "<tools>" not in default and "<tools>" in tool_use

    chatml = os.path.join(OUT, "chatml")
    config_dir = os.path.join(OUT, "chatml-config")
    for d in (chatml, config_dir):
        os.makedirs(d, exist_ok=True)
        write_text(os.path.join(d, "tokenizer.json"), tokenizer_json)
    write_json(os.path.join(chatml, "tokenizer_config.json"), tokenizer_config())
    write_text(os.path.join(chatml, "chat_template.jinja"), tool_use)
    write_json(
        os.path.join(config_dir, "tokenizer_config.json"),
        tokenizer_config([{"name": "default", "template": default}, {"name": "tool_use", "template": tool_use}]),
    )
    print(
        f"build_fixture: {len(corpus)} distinct texts ({sum(len(t.encode()) for t in corpus)} bytes), "
        f"vocab {tok.get_vocab_size()} -> {OUT}/chatml, {OUT}/chatml-config",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
