//! A model's own tokenizer and chat template: renders a sample exactly as
//! transformers' `apply_chat_template` does for training (messages, tools,
//! `add_generation_prompt=False`, the tokenizer's special-token strings as
//! variables) and counts its tokens, and the tokens inside the template's
//! `{% generation %}` blocks (what `return_assistant_tokens_mask` marks,
//! i.e. what `assistant_only_loss` trains on).
//!
//! The template engine is minijinja, set up like transformers' Jinja2
//! environment: `trim_blocks`, `lstrip_blocks`, loop controls, a `tojson`
//! that writes what Python's `json.dumps` writes, `raise_exception`,
//! `strftime_now`, Python string and dict methods, and the
//! `{% generation %}` block.
//!
//! Counting is exact. For speed, the rendered text is split at the
//! tokenizer's special tokens (which the tokenizer itself splits out before
//! anything else runs), and the token count of each long piece between
//! them is remembered: a system prompt and a tool list repeat in every
//! sample. Tokenizers whose pieces are not independent (a normalizer or
//! pre-tokenizer that treats the start of the text specially, special
//! tokens that strip neighbouring spaces) are always counted whole.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;
use tokenizers::Tokenizer;

use crate::hash::BuildFast;
use crate::stats_env::Cache;
use crate::tokens::Count;
use crate::tokens::bpe::FastBpe;
use crate::tokens::pyjson::PyJson;

/// Marks written where a `{% generation %}` block opens and closes. They
/// are Unicode noncharacters, which never occur in exchanged text, and are
/// removed before tokenizing.
const GEN_OPEN: char = '\u{FDD0}';
const GEN_CLOSE: char = '\u{FDD1}';

/// Remembered pieces at most, and their bytes at most (then the memory
/// starts over). Fitting a sample renders it several times, and a system
/// prompt and tool list repeat across samples: every piece is remembered.
/// What hits is mostly those few repeated pieces: on varied text 1,024
/// pieces hit 70.7 % of lookups where 16,384 hit 71.2 %, and the smaller
/// memory was faster (it stays in the processor's caches).
const CACHE_ENTRIES: usize = 1 << 10;
const CACHE_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct ChatTokenizer {
    /// Shared by the copies other threads count with (it is only read).
    tokenizer: std::sync::Arc<Tokenizer>,
    /// The exact fast path for byte-level BPE tokenizers, if this is one.
    fast: Option<FastBpe>,
    /// Whether `fast` may also give offsets (the tokenizer does not trim
    /// them).
    fast_offsets: bool,
    env: Environment<'static>,
    /// Template names: `default` always; `tool_use` when the model has one.
    has_tool_use: bool,
    has_default: bool,
    /// The special-token strings templates see (`bos_token`, `eos_token`, …).
    /// The special-token variables templates read (`bos_token`, …), as
    /// template values.
    specials: Vec<(String, Value)>,
    /// Special tokens to split rendered text at, longest first; empty when
    /// the tokenizer must count whole texts.
    splitters: Vec<String>,
    cache: HashMap<String, usize, BuildFast>,
    cache_bytes: usize,
    /// Where the tokenizer and the template came from, for the manifest.
    pub description: String,
    /// The template file (or config) the templates came from.
    pub template_origin: String,
    /// Whether the template marks assistant turns with `{% generation %}`;
    /// without it the trainable tokens are found by prefix difference.
    pub generation_block: bool,
    /// Samples' system prompts are folded into their first user turn.
    pub fold_system: bool,
    /// Whether the last assistant turn's tokens are counted ([`Count`]'s
    /// `last_turn`) where the template has generation blocks: it takes a
    /// second render of each sample (the conversation before that turn),
    /// and only a manifest shows the figure.
    pub last_turn: bool,
}

/// `{% generation %}` / `{% endgeneration %}` (with any whitespace control)
/// become filter blocks that write the marks, so the tags keep their
/// whitespace behaviour under `trim_blocks`/`lstrip_blocks`.
fn rewrite_generation(src: &str) -> (String, bool) {
    let re =
        regex::Regex::new(r"\{%([-+]?)\s*(end)?generation\s*([-+]?)%\}").expect("static regex");
    let found = re.is_match(src);
    let out = re.replace_all(src, |c: &regex::Captures<'_>| {
        let filter = if c.get(2).is_some() {
            "__hh_gen_close"
        } else {
            "__hh_gen_open"
        };
        format!("{{%{} filter {filter} %}}{{% endfilter {}%}}", &c[1], &c[3])
    });
    (out.into_owned(), found)
}

fn token_string(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(m) => m.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    match crate::safe_io::read_regular(path, crate::safe_io::MAX_TOKENIZER_BYTES) {
        Ok(bytes) => {
            Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not valid JSON", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// The chat templates of a model directory by name, and where they came
/// from: `chat_template.jinja`, then `chat_template.json`, then
/// `tokenizer_config.json`'s `chat_template` (a string, or a list of
/// `{"name", "template"}`).
fn templates(dir: &Path, config: Option<&Json>) -> Result<(Vec<(String, String)>, String)> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let text = crate::safe_io::read_text(&jinja, crate::safe_io::MAX_PROMPT_BYTES)
            .with_context(|| format!("reading {}", jinja.display()))?;
        return Ok((vec![("default".into(), text)], jinja.display().to_string()));
    }
    let json_file = dir.join("chat_template.json");
    let (value, origin) = match read_json(&json_file)? {
        Some(v) => (v.get("chat_template").cloned(), json_file),
        None => (
            config.and_then(|c| c.get("chat_template")).cloned(),
            dir.join("tokenizer_config.json"),
        ),
    };
    let list = match value {
        Some(Json::String(s)) => vec![("default".to_string(), s)],
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|t| {
                Some((
                    t.get("name")?.as_str()?.to_string(),
                    t.get("template")?.as_str()?.to_string(),
                ))
            })
            .collect(),
        _ => Vec::new(),
    };
    if list.is_empty() {
        bail!(
            "{}: no chat template (looked for chat_template.jinja, chat_template.json and tokenizer_config.json's chat_template)",
            dir.display()
        );
    }
    Ok((list, origin.display().to_string()))
}

/// Whether counting the pieces between special tokens separately gives the
/// count of the whole text for this tokenizer.
fn pieces_are_independent(tokenizer_json: &Json) -> bool {
    let position_dependent = |v: Option<&Json>| {
        let text = v.map(Json::to_string).unwrap_or_default();
        text.contains("Prepend") || text.contains("Metaspace")
    };
    !position_dependent(tokenizer_json.get("normalizer"))
        && !position_dependent(tokenizer_json.get("pre_tokenizer"))
}

/// The special tokens a template may name (`bos_token`, …), from
/// `tokenizer_config.json`, else `special_tokens_map.json`.
fn special_tokens(config: Option<&Json>, map_file: Option<&Json>) -> Vec<(String, Value)> {
    let mut specials = Vec::new();
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        let v = [config, map_file]
            .into_iter()
            .flatten()
            .find_map(|c| c.get(key).and_then(token_string));
        if let Some(v) = v {
            specials.push((key.to_string(), Value::from(v)));
        }
    }
    if let Some(extra) = [config, map_file]
        .into_iter()
        .flatten()
        .find_map(|c| c.get("additional_special_tokens").and_then(Json::as_array))
    {
        let list: Vec<String> = extra.iter().filter_map(token_string).collect();
        specials.push(("additional_special_tokens".into(), Value::from(list)));
    }
    specials
}

/// Instructions one render may run.
pub const TEMPLATE_FUEL: u64 = 2_000_000;
/// minijinja's recursion budget for one render (its safe maximum without
/// growing the stack).
pub const TEMPLATE_RECURSION: usize = 500;

/// The template environment with what real chat templates use: Python
/// string methods, `raise_exception`, `strftime_now`, `tojson` and the
/// generation marks.
fn template_env() -> Environment<'static> {
    let mut env = Environment::new();
    // Hostile templates: fuel bounds the instructions of one render (a
    // real sample takes well under a million), the recursion limit bounds
    // nesting (macros, loops, includes), and `render_guard` bounds memory.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_function("strftime_now", |fmt: String| -> Result<String, Error> {
        let mut out = String::new();
        write!(out, "{}", chrono::Local::now().format(&fmt)).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                format!("strftime_now: bad format {fmt:?}"),
            )
        })?;
        Ok(out)
    });
    env.add_filter("tojson", tojson);
    env.add_filter("__hh_gen_open", |_: String| GEN_OPEN.to_string());
    env.add_filter("__hh_gen_close", |_: String| GEN_CLOSE.to_string());
    env
}

/// Special tokens a text can be split at before counting (longest first):
/// only when the tokenizer's pieces do not depend on their position and no
/// added token strips spaces around it.
fn splitters(tokenizer: &Tokenizer, tokenizer_json: &Json) -> Vec<String> {
    if pieces_are_independent(tokenizer_json) {
        let mut added: Vec<String> = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.lstrip && !t.rstrip && !t.single_word)
            .map(|t| t.content)
            .filter(|c| !c.is_empty())
            .collect();
        let risky = tokenizer
            .get_added_tokens_decoder()
            .into_values()
            .any(|t| t.lstrip || t.rstrip);
        if risky {
            added.clear();
        }
        added.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        added
    } else {
        Vec::new()
    }
}

impl ChatTokenizer {
    /// `path` is a model directory (as given to the trainer) or its
    /// `tokenizer.json`.
    pub fn load(path: &Path) -> Result<ChatTokenizer> {
        let (dir, file): (PathBuf, PathBuf) = if path.is_dir() {
            (path.to_path_buf(), path.join("tokenizer.json"))
        } else {
            (
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf(),
                path.to_path_buf(),
            )
        };
        let raw = crate::safe_io::read_regular(&file, crate::safe_io::MAX_TOKENIZER_BYTES)
            .with_context(|| format!("--tokenizer: cannot read {}", file.display()))?;
        let mut tokenizer = Tokenizer::from_bytes(&raw)
            .map_err(|e| anyhow!("--tokenizer: {} is not a tokenizer: {e}", file.display()))?;
        let _ = tokenizer.with_truncation(None);
        tokenizer.with_padding(None);
        let tokenizer_json: Json = serde_json::from_slice(&raw)
            .with_context(|| format!("{} is not valid JSON", file.display()))?;

        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let map_file = read_json(&dir.join("special_tokens_map.json"))?;
        let specials = special_tokens(config.as_ref(), map_file.as_ref());
        let (list, origin) = templates(&dir, config.as_ref())?;
        let mut env = template_env();
        let mut marks_assistant = false;
        let (mut has_default, mut has_tool_use) = (false, false);
        for (name, text) in list {
            let (text, marks) = rewrite_generation(&text);
            marks_assistant |= marks;
            has_default |= name == "default";
            has_tool_use |= name == "tool_use";
            env.add_template_owned(name.clone(), text)
                .map_err(|e| anyhow!("{origin}: chat template {name:?} does not parse: {e:#}"))?;
        }

        let splitters = splitters(&tokenizer, &tokenizer_json);
        let fast = FastBpe::from_json(&tokenizer_json);
        let fast_offsets = !tokenizer_json
            .get("post_processor")
            .map(Json::to_string)
            .unwrap_or_default()
            .contains("\"trim_offsets\":true");
        Ok(ChatTokenizer {
            tokenizer: std::sync::Arc::new(tokenizer),
            fast,
            fast_offsets,
            env,
            has_tool_use,
            has_default,
            specials,
            splitters,
            cache: HashMap::default(),
            cache_bytes: 0,
            description: format!(
                "{} with the chat template of {origin}{}",
                file.display(),
                if marks_assistant {
                    ""
                } else {
                    " (no {% generation %} block: trainable tokens found by prefix difference)"
                }
            ),
            template_origin: origin,
            generation_block: marks_assistant,
            fold_system: false,
            last_turn: true,
        })
    }

    /// The text the trainer's template makes of a sample, with the marks of
    /// the generation blocks still in it.
    fn render_marked(&self, messages: &Value, tools: Option<&Value>) -> Result<String> {
        self.render_with(messages, tools, false)
    }

    fn render_with(
        &self,
        messages: &Value,
        tools: Option<&Value>,
        generation_prompt: bool,
    ) -> Result<String> {
        let name = if tools.is_some() && self.has_tool_use {
            "tool_use"
        } else if self.has_default {
            "default"
        } else {
            bail!("the chat template list has no \"default\" template");
        };
        let tmpl = self.env.get_template(name).expect("added above");
        let ctx: Value = [
            ("messages", messages.clone()),
            ("tools", tools.cloned().unwrap_or(Value::from(()))),
            ("documents", Value::from(())),
            ("add_generation_prompt", Value::from(generation_prompt)),
        ]
        .into_iter()
        .chain(self.specials.iter().map(|(k, v)| (k.as_str(), v.clone())))
        .collect();
        crate::render_guard::bounded(|| tmpl.render(ctx))
            .map_err(|e| anyhow!("the chat template failed on this sample: {e:#}"))
    }

    /// The rendered text, as `apply_chat_template(tokenize=False)` returns it.
    pub fn render(&self, messages: &Value, tools: Option<&Value>) -> Result<String> {
        let marked = self.render_marked(messages, tools)?;
        Ok(strip_marks(&marked).0)
    }

    /// Tokens of the rendered sample, and (with `trainable`) those trainers
    /// train on: inside generation blocks when the template has them, else
    /// by prefix difference ([`ChatTokenizer::prefix_diff`]); the last
    /// assistant turn's alone always by prefix difference (unless
    /// [`ChatTokenizer::last_turn`] is off: then it is 0 with generation
    /// blocks). Without `trainable` only the total is counted.
    pub fn count(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        trainable: bool,
    ) -> Result<Count> {
        let marked = self.render_marked(messages, tools)?;
        let (text, mut spans) = strip_marks(&marked);
        if !trainable || !self.generation_block {
            spans.clear();
        }
        // Without splitters the whole text is one piece.
        let tally = self.count_pieces(&text, &spans)?;
        let mut count = tally.count;
        if trainable && (!self.generation_block || self.last_turn) {
            let only_last = self.generation_block;
            let (all, last) = self.prefix_diff(messages, tools, (&text, &tally), only_last)?;
            if !self.generation_block {
                count.trainable = all;
            }
            count.last_turn = last;
        }
        Ok(count)
    }

    /// Trainable tokens found as trainers without generation blocks find
    /// them (axolotl's turn search, mlx-lm's `--mask-prompt` offset): for
    /// each assistant message, the tokens of the conversation rendered up
    /// to and with it, past the longest common token prefix with the
    /// conversation before it rendered with the generation prompt (so the
    /// assistant header is not trained, its end marker is). Returns the sum
    /// over assistant messages and the last one's (with `only_last`, only
    /// the last one is looked at). `full` is the whole rendered sample
    /// (the last message's conversation) and its counted pieces.
    fn prefix_diff(
        &mut self,
        messages: &Value,
        tools: Option<&Value>,
        full: (&str, &Tally),
        only_last: bool,
    ) -> Result<(usize, usize)> {
        let items: Vec<Value> = messages
            .try_iter()
            .map_err(|e| anyhow!("messages: {e}"))?
            .collect();
        let is_assistant = |v: &Value| {
            v.get_attr("role").ok().as_ref().and_then(Value::as_str) == Some("assistant")
        };
        let last_assistant = items.iter().rposition(is_assistant);
        let (mut all, mut last) = (0, 0);
        for i in 0..items.len() {
            if !is_assistant(&items[i]) || (only_last && Some(i) != last_assistant) {
                continue;
            }
            let marked = self.render_with(&Value::from(items[..i].to_vec()), tools, true)?;
            let before = strip_marks(&marked).0;
            let (common, len) = if i + 1 == items.len() {
                self.common_with_counted(&before, full.0, full.1)?
            } else {
                let with = self.render(&Value::from(items[..=i].to_vec()), tools)?;
                self.common_tokens(&before, &with)?
            };
            last = len - common;
            all += last;
        }
        Ok((all, last))
    }

    /// The longest common token prefix of `a` and `b`, and the tokens of
    /// `b`. With independent pieces (see the module documentation) only
    /// the first piece where they differ is encoded to ids; equal pieces
    /// are counted (and remembered) as usual.
    fn common_tokens(&mut self, a: &str, b: &str) -> Result<(usize, usize)> {
        if self.splitters.is_empty() {
            return self.shared_prefix(a, b);
        }
        let (pa, pb) = (
            split_at_specials(a, &self.splitters),
            split_at_specials(b, &self.splitters),
        );
        let (mut common, mut len, mut same) = (0, 0, true);
        for (k, q) in pb.iter().enumerate() {
            let text_b = &b[q.start..q.end];
            let n = if q.special {
                1
            } else {
                self.piece_len(text_b)?
            };
            len += n;
            if !same {
                continue;
            }
            match pa.get(k) {
                Some(p) if p.special == q.special && a[p.start..p.end] == *text_b => common += n,
                Some(p) if !p.special && !q.special => {
                    common += self.shared_prefix(&a[p.start..p.end], text_b)?.0;
                    same = false;
                }
                _ => same = false,
            }
        }
        Ok((common, len))
    }

    /// [`ChatTokenizer::common_tokens`] where `b` is counted already
    /// (`tally`): only the first piece where `a` differs is encoded, and of
    /// that piece only `a`'s side when `b`'s token lengths are known.
    fn common_with_counted(&mut self, a: &str, b: &str, tally: &Tally) -> Result<(usize, usize)> {
        let pa = split_at_specials(a, &self.splitters);
        let mut common = 0;
        for (k, q) in tally.pieces.iter().enumerate() {
            let text_b = &b[q.start..q.end];
            match pa.get(k) {
                Some(p) if p.special == q.special && a[p.start..p.end] == *text_b => {
                    common += tally.starts[k + 1] - tally.starts[k];
                }
                Some(p) if !p.special && !q.special => {
                    let known = tally.lengths(k);
                    common += self
                        .shared_prefix_known(&a[p.start..p.end], text_b, known)?
                        .0;
                    break;
                }
                _ => break,
            }
        }
        Ok((common, tally.count.total))
    }

    /// The longest common token prefix of `a` and `b` (by ids), and the
    /// tokens of `b`. The fast counter gives token lengths: where its
    /// vocabulary's ids are distinct, equal bytes at the same place are
    /// the same token, so the tokens are compared by their bytes.
    fn shared_prefix(&mut self, a: &str, b: &str) -> Result<(usize, usize)> {
        self.shared_prefix_known(a, b, None)
    }

    /// [`ChatTokenizer::shared_prefix`], with `b`'s token lengths if they
    /// are known (from the fast counter).
    fn shared_prefix_known(
        &mut self,
        a: &str,
        b: &str,
        b_lengths: Option<Vec<u32>>,
    ) -> Result<(usize, usize)> {
        if let Some(fast) = self.fast.as_mut().filter(|f| f.distinct_ids) {
            let mut x = Vec::new();
            let y = match b_lengths {
                Some(y) => Some(y),
                None => {
                    let mut y = Vec::new();
                    fast.token_lengths(b, &mut y).map(|()| y)
                }
            };
            if let Some(y) = y.filter(|_| fast.token_lengths(a, &mut x).is_some()) {
                let (mut at, mut common) = (0, 0);
                for (p, q) in x.iter().zip(&y) {
                    let n = *p as usize;
                    if p != q || a.as_bytes()[at..at + n] != b.as_bytes()[at..at + n] {
                        break;
                    }
                    at += n;
                    common += 1;
                }
                return Ok((common, y.len()));
            }
        }
        let (x, y) = (self.ids(a)?, self.ids(b)?);
        let common = x.iter().zip(&y).take_while(|(p, q)| p == q).count();
        Ok((common, y.len()))
    }

    fn ids(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec())
    }

    fn encode_len(&mut self, text: &str) -> Result<usize> {
        if let Some(n) = self.fast.as_mut().and_then(|f| f.count(text)) {
            return Ok(n);
        }
        Ok(self
            .tokenizer
            .encode_fast(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?
            .len())
    }

    /// The token spans of `text`, and whether they are the fast counter's
    /// (then each span's length is its token's).
    fn offsets(&mut self, text: &str) -> Result<(Vec<(usize, usize)>, bool)> {
        if self.fast_offsets
            && let Some(fast) = self.fast.as_mut()
        {
            let mut lens = Vec::new();
            if fast.token_lengths(text, &mut lens).is_some() {
                let mut at = 0;
                let spans = lens
                    .into_iter()
                    .map(|n| {
                        let span = (at, at + n as usize);
                        at += n as usize;
                        span
                    })
                    .collect();
                return Ok((spans, true));
            }
        }
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow!("tokenizing: {e}"))?;
        Ok((encoding.get_offsets().to_vec(), false))
    }

    fn count_pieces(&mut self, text: &str, spans: &[(usize, usize)]) -> Result<Tally> {
        let pieces = split_at_specials(text, &self.splitters);
        // Token index where each piece starts, and the token offsets of the
        // pieces a span starts or ends in (encoded once, for both).
        let mut starts = Vec::with_capacity(pieces.len() + 1);
        let mut offsets: Vec<Encoded> = Vec::new();
        let mut total = 0;
        for (k, p) in pieces.iter().enumerate() {
            starts.push(total);
            let holds = |c: usize| p.start <= c && c < p.end;
            total += if p.special {
                1
            } else if spans.iter().any(|&(s, e)| holds(s) || holds(e - 1)) {
                let (spans, fast) = self.offsets(&text[p.start..p.end])?;
                let n = spans.len();
                offsets.push(Encoded {
                    piece: k,
                    spans,
                    fast,
                });
                n
            } else {
                self.piece_len(&text[p.start..p.end])?
            };
        }
        starts.push(total);
        let token_at = |c: usize| -> Option<usize> {
            let k = pieces.iter().position(|p| p.start <= c && c < p.end)?;
            if pieces[k].special {
                return Some(starts[k]);
            }
            let o = offsets.iter().find(|e| e.piece == k)?;
            let local = c - pieces[k].start;
            o.spans
                .iter()
                .position(|&(s, e)| s <= local && local < e)
                .map(|i| starts[k] + i)
        };
        let ranges = spans
            .iter()
            .filter_map(|&(s, e)| Some((token_at(s)?, token_at(e - 1).unwrap_or(total - 1))))
            .collect();
        let count = Count {
            total,
            trainable: union_len(ranges),
            last_turn: 0,
        };
        Ok(Tally {
            count,
            pieces,
            starts,
            offsets,
        })
    }

    fn piece_len(&mut self, piece: &str) -> Result<usize> {
        if let Some(&n) = self.cache.get(piece) {
            crate::stats_env::lookup(Cache::Pieces, true);
            return Ok(n);
        }
        crate::stats_env::lookup(Cache::Pieces, false);
        let n = self.encode_len(piece)?;
        if self.cache.len() >= CACHE_ENTRIES || self.cache_bytes + piece.len() > CACHE_BYTES {
            self.cache.clear();
            self.cache_bytes = 0;
        }
        self.cache_bytes += piece.len();
        self.cache.insert(piece.to_string(), n);
        Ok(n)
    }
}

/// transformers' `tojson`: `json.dumps` with `ensure_ascii=False` by
/// default, and its `indent`, `separators`, `sort_keys` and
/// `ensure_ascii` arguments.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, Error> {
    let json = serde_json::to_value(&value)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
    let mut py = PyJson::default();
    if let Some(indent) = kwargs.get::<Option<Value>>("indent")? {
        py.indent = if let Some(n) = indent.as_usize() {
            Some(" ".repeat(n))
        } else {
            indent.as_str().map(str::to_string)
        };
    }
    if let Some(seps) = kwargs.get::<Option<Vec<String>>>("separators")?
        && seps.len() == 2
    {
        py.item_sep = Some(seps[0].clone());
        py.key_sep = Some(seps[1].clone());
    }
    py.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    py.ensure_ascii = kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    Ok(Value::from_safe_string(py.dumps(&json)))
}

/// Removes the generation marks; returns the text and the byte spans
/// (in the returned text) that were inside generation blocks.
fn strip_marks(marked: &str) -> (String, Vec<(usize, usize)>) {
    let bytes = marked.as_bytes();
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut open: Option<usize> = None;
    let mut copied = 0;
    let mut i = 0;
    // Both marks are EF B7 90 / EF B7 91 in UTF-8.
    while let Some(k) = memchr::memchr(0xEF, &bytes[i..]) {
        let at = i + k;
        let mark = match bytes.get(at + 1..at + 3) {
            Some([0xB7, 0x90]) => Some(GEN_OPEN),
            Some([0xB7, 0x91]) => Some(GEN_CLOSE),
            _ => None,
        };
        i = at + 1;
        let Some(mark) = mark else {
            continue;
        };
        text.push_str(&marked[copied..at]);
        copied = at + 3;
        i = copied;
        if mark == GEN_OPEN {
            open = open.or(Some(text.len()));
        } else if let Some(s) = open.take()
            && text.len() > s
        {
            spans.push((s, text.len()));
        }
    }
    text.push_str(&marked[copied..]);
    if let Some(s) = open
        && text.len() > s
    {
        spans.push((s, text.len()));
    }
    (text, spans)
}

/// A rendered text counted piece by piece.
struct Tally {
    count: Count,
    pieces: Vec<Piece>,
    /// The token index where each piece starts, and the total last.
    starts: Vec<usize>,
    /// The pieces that were encoded for their token spans.
    offsets: Vec<Encoded>,
}

/// A piece's token spans (byte ranges in the piece).
struct Encoded {
    piece: usize,
    spans: Vec<(usize, usize)>,
    /// Given by the fast counter: each span is then exactly one token's bytes.
    fast: bool,
}

impl Tally {
    /// The token lengths of piece `k`, when the fast counter gave them.
    fn lengths(&self, k: usize) -> Option<Vec<u32>> {
        let e = self.offsets.iter().find(|e| e.piece == k && e.fast)?;
        Some(e.spans.iter().map(|(s, e)| (e - s) as u32).collect())
    }
}

struct Piece {
    start: usize,
    end: usize,
    special: bool,
}

fn split_at_specials(text: &str, specials: &[String]) -> Vec<Piece> {
    let mut firsts: Vec<u8> = specials.iter().map(|s| s.as_bytes()[0]).collect();
    firsts.sort_unstable();
    firsts.dedup();
    let mut table = [false; 256];
    for b in &firsts {
        table[usize::from(*b)] = true;
    }
    // The next byte that may start a special token (usually `<`).
    let next = |hay: &[u8]| match firsts.as_slice() {
        [a] => memchr::memchr(*a, hay),
        [a, b] => memchr::memchr2(*a, *b, hay),
        [a, b, c] => memchr::memchr3(*a, *b, *c, hay),
        _ => hay.iter().position(|b| table[usize::from(*b)]),
    };
    let mut pieces = Vec::new();
    let mut plain = 0;
    let mut i = 0;
    let bytes = text.as_bytes();
    while let Some(k) = next(&bytes[i..]) {
        let at = i + k;
        match specials
            .iter()
            .find(|s| bytes[at..].starts_with(s.as_bytes()))
        {
            Some(s) => {
                if plain < at {
                    pieces.push(Piece {
                        start: plain,
                        end: at,
                        special: false,
                    });
                }
                pieces.push(Piece {
                    start: at,
                    end: at + s.len(),
                    special: true,
                });
                i = at + s.len();
                plain = i;
            }
            None => i = at + 1,
        }
    }
    if plain < bytes.len() {
        pieces.push(Piece {
            start: plain,
            end: bytes.len(),
            special: false,
        });
    }
    pieces
}

/// How many token indices the inclusive ranges cover together.
fn union_len(mut ranges: Vec<(usize, usize)>) -> usize {
    ranges.retain(|(a, b)| a <= b);
    ranges.sort_unstable();
    let mut n = 0;
    let mut reach: Option<usize> = None;
    for (a, b) in ranges {
        let from = match reach {
            Some(r) if a <= r => r + 1,
            _ => a,
        };
        if b >= from {
            n += b - from + 1;
        }
        reach = Some(reach.map_or(b, |r| r.max(b)));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_become_spans() {
        let (text, spans) = strip_marks("a\u{FDD0}bc\u{FDD1}d\u{FDD0}e");
        assert_eq!(text, "abcde");
        assert_eq!(spans, vec![(1, 3), (4, 5)]);
    }

    #[test]
    fn generation_tags_keep_their_whitespace_control() {
        let (out, found) = rewrite_generation("x{%- generation -%}y{% endgeneration %}");
        assert!(found);
        assert_eq!(
            out,
            "x{%- filter __hh_gen_open %}{% endfilter -%}y{% filter __hh_gen_close %}{% endfilter %}"
        );
    }

    #[test]
    fn union_of_ranges() {
        assert_eq!(union_len(vec![(0, 2), (1, 3), (6, 6)]), 5);
        assert_eq!(union_len(vec![]), 0);
    }

    #[test]
    fn split_keeps_specials_apart() {
        let specials = vec!["<|im_end|>".to_string(), "<|im_start|>".to_string()];
        let text = "<|im_start|>user\nhi<|im_end|>\n";
        let pieces: Vec<(&str, bool)> = split_at_specials(text, &specials)
            .iter()
            .map(|p| (&text[p.start..p.end], p.special))
            .collect();
        assert_eq!(
            pieces,
            vec![
                ("<|im_start|>", true),
                ("user\nhi", false),
                ("<|im_end|>", true),
                ("\n", false)
            ]
        );
    }
}
