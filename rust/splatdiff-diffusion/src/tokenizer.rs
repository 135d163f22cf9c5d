//! CLIP's byte-level BPE tokenizer, read from a diffusers `tokenizer/` folder
//! (`vocab.json` + `merges.txt`, plus `special_tokens_map.json` /
//! `tokenizer_config.json` for the padding token), in pure Rust.
//!
//! It reproduces transformers' `CLIPTokenizer`: Unicode NFC, whitespace runs
//! collapsed to one space, per-character lowercase, CLIP's pre-tokenizer
//! regex, GPT-2's byte-to-unicode table and rank-ordered BPE merges with an
//! end-of-word marker. SD 1.x pads with `<|endoftext|>`, SD 2.x with `!`; the
//! folder says which.
//!
//! A prompt longer than the model's window (77 ids with BOS and EOS) is never
//! cut silently: [`ClipTokenizer::encode_padded`] reports how many tokens were
//! dropped, and [`ClipTokenizer::encode_chunks`] splits it into several
//! 75-token windows, as the AUTOMATIC1111 web UI does, whose encodings are
//! concatenated along the sequence axis.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::error::{DiffusionError, Result};

const BOS_TOKEN: &str = "<|startoftext|>";
const EOS_TOKEN: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// CLIP's context length (BOS + 75 prompt tokens + EOS).
pub const CLIP_MAX_LENGTH: usize = 77;

/// CLIP's pre-tokenizer pattern (as in transformers' `CLIPTokenizer`): the
/// special tokens, English contractions, letter runs, single digits and
/// runs of other non-space characters.
const PATTERN: &str = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+";

/// A prompt encoded to one fixed-length window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// `max_length` ids: BOS, prompt tokens, EOS, then padding.
    pub ids: Vec<u32>,
    /// Number of prompt tokens (without BOS/EOS) that did not fit and were
    /// dropped; 0 when the whole prompt fits.
    pub truncated: usize,
}

/// CLIP BPE tokenizer with its special ids.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_chars: [char; 256],
    pattern: Regex,
    /// Added tokens (textual-inversion names): normalised text -> the ids it
    /// expands to, matched before BPE.
    added: Vec<(String, Vec<u32>)>,
    next_added_id: u32,
    bos: u32,
    eos: u32,
    pad: u32,
    max_length: usize,
}

impl ClipTokenizer {
    /// Loads a diffusers `tokenizer/` folder. `vocab.json` and `merges.txt`
    /// are required; the padding token and maximum length come from
    /// `special_tokens_map.json` / `tokenizer_config.json` when present
    /// (default: pad with `<|endoftext|>`, 77 ids).
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        let vocab_text = read_text(&vocab_path)?;
        let vocab: HashMap<String, u32> = serde_json::from_str(&vocab_text)
            .map_err(|e| DiffusionError::format(&vocab_path, format!("not a token->id map: {e}")))?;
        let merges_text = read_text(&merges_path)?;

        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let special = read_optional_json(&dir.join("special_tokens_map.json"))?;
        let token_setting = |key: &str| -> Option<String> {
            [&special, &config].into_iter().flatten().find_map(|j| token_string(j.get(key)?))
        };
        let pad_token = token_setting("pad_token").unwrap_or_else(|| EOS_TOKEN.to_string());
        let max_length = config
            .as_ref()
            .and_then(|c| c.get("model_max_length")?.as_f64())
            .filter(|m| (3.0..=4096.0).contains(m))
            .map_or(CLIP_MAX_LENGTH, |m| m as usize);

        let id_of = |token: &str, setting: &str| -> Result<u32> {
            vocab.get(token).copied().ok_or_else(|| {
                DiffusionError::format(&vocab_path, format!("{setting} token `{token}` is not in the vocabulary"))
            })
        };
        let bos = id_of(&token_setting("bos_token").unwrap_or_else(|| BOS_TOKEN.into()), "BOS")?;
        let eos = id_of(&token_setting("eos_token").unwrap_or_else(|| EOS_TOKEN.into()), "EOS")?;
        let pad = id_of(&pad_token, "padding")?;
        let ranks = parse_merges(&merges_text, &merges_path)?;
        Self::new(vocab, ranks, bos, eos, pad, max_length)
    }

    fn new(
        vocab: HashMap<String, u32>,
        ranks: HashMap<(String, String), usize>,
        bos: u32,
        eos: u32,
        pad: u32,
        max_length: usize,
    ) -> Result<Self> {
        let pattern = Regex::new(PATTERN).map_err(|e| DiffusionError::Invalid(format!("CLIP pattern: {e}")))?;
        let next_added_id = vocab.values().max().map_or(0, |m| m + 1);
        let special = vec![(BOS_TOKEN.to_string(), vec![bos]), (EOS_TOKEN.to_string(), vec![eos])];
        Ok(Self {
            vocab,
            ranks,
            byte_chars: byte_to_unicode(),
            pattern,
            added: special,
            next_added_id,
            bos,
            eos,
            pad,
            max_length,
        })
    }

    /// Id of the beginning-of-text token.
    pub fn bos_id(&self) -> u32 {
        self.bos
    }

    /// Id of the end-of-text token.
    pub fn eos_id(&self) -> u32 {
        self.eos
    }

    /// Id used to pad a window after EOS.
    pub fn pad_id(&self) -> u32 {
        self.pad
    }

    /// Window length in ids, BOS and EOS included (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Number of ids: the vocabulary plus added tokens. The text encoder's
    /// embedding table must have this many rows.
    pub fn vocab_size(&self) -> usize {
        self.next_added_id as usize
    }

    /// Registers a textual-inversion token `name` standing for `n_vectors`
    /// new ids (appended after the vocabulary, in order), which a prompt's
    /// `name` expands to, as diffusers' `load_textual_inversion` does with
    /// `name`, `name_1`, .... Returns the new ids. Fails if the name is
    /// already a token or registered, or `n_vectors` is 0.
    pub fn add_token(&mut self, name: &str, n_vectors: usize) -> Result<Vec<u32>> {
        let key = normalize(name);
        if n_vectors == 0 {
            return Err(DiffusionError::Invalid(format!("token `{name}` has no vectors")));
        }
        if key.trim().is_empty() || key.split_whitespace().count() != 1 {
            return Err(DiffusionError::Invalid(format!("token `{name}` must be one word without spaces")));
        }
        if self.added.iter().any(|(k, _)| *k == key)
            || self.vocab.contains_key(&key)
            || self.vocab.contains_key(&format!("{key}{END_OF_WORD}"))
        {
            return Err(DiffusionError::Invalid(format!("token `{name}` already exists in the tokenizer")));
        }
        let ids: Vec<u32> = (0..n_vectors as u32).map(|i| self.next_added_id + i).collect();
        self.next_added_id += n_vectors as u32;
        self.added.push((key, ids.clone()));
        Ok(ids)
    }

    /// The prompt's token ids, without BOS, EOS, padding or truncation.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let text = normalize(text);
        let mut ids = Vec::new();
        let mut rest = text.as_str();
        while !rest.is_empty() {
            // The earliest (then longest) added token splits the text.
            let hit = self
                .added
                .iter()
                .filter_map(|(k, v)| rest.find(k.as_str()).map(|at| (at, k.len(), v)))
                .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
            match hit {
                Some((at, len, added_ids)) => {
                    self.tokenize_plain(&rest[..at], &mut ids);
                    ids.extend_from_slice(added_ids);
                    rest = &rest[at + len..];
                }
                None => {
                    self.tokenize_plain(rest, &mut ids);
                    rest = "";
                }
            }
        }
        ids
    }

    /// One window: BOS, the prompt's tokens (cut to fit, with the count of
    /// dropped tokens reported), EOS, then padding to [`Self::max_length`].
    pub fn encode_padded(&self, text: &str) -> Encoding {
        let tokens = self.tokenize(text);
        let room = self.max_length - 2;
        let truncated = tokens.len().saturating_sub(room);
        Encoding { ids: self.window(&tokens[..tokens.len() - truncated]), truncated }
    }

    /// The prompt split into consecutive windows of `max_length - 2` tokens
    /// (75 for CLIP), each wrapped as BOS + tokens + EOS + padding, as the
    /// AUTOMATIC1111 web UI does for long prompts; the text encoder's outputs
    /// for the windows are concatenated along the sequence axis. Returns at
    /// least `min_windows` windows (extra ones are empty prompts) so a
    /// prompt and its negative prompt can be given the same length.
    pub fn encode_chunks(&self, text: &str, min_windows: usize) -> Vec<Vec<u32>> {
        let tokens = self.tokenize(text);
        let room = self.max_length - 2;
        let mut windows: Vec<Vec<u32>> = tokens.chunks(room).map(|c| self.window(c)).collect();
        while windows.len() < min_windows.max(1) {
            windows.push(self.window(&[]));
        }
        windows
    }

    fn window(&self, tokens: &[u32]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos);
        ids.extend_from_slice(tokens);
        ids.push(self.eos);
        ids.resize(self.max_length, self.pad);
        ids
    }

    fn tokenize_plain(&self, text: &str, ids: &mut Vec<u32>) {
        for piece in self.pattern.find_iter(text) {
            let mapped: String = piece.as_str().bytes().map(|b| self.byte_chars[b as usize]).collect();
            for symbol in self.bpe(&mapped) {
                // Every byte symbol is in a CLIP vocabulary; a hand-made one
                // missing some maps them to EOS, CLIP's unknown token.
                ids.push(self.vocab.get(&symbol).copied().unwrap_or(self.eos));
            }
        }
    }

    /// Applies the merges by rank to one pre-tokenized piece (already mapped
    /// through the byte table); the last symbol carries the end-of-word mark.
    fn bpe(&self, piece: &str) -> Vec<String> {
        let mut word: Vec<String> = piece.chars().map(String::from).collect();
        if let Some(last) = word.last_mut() {
            last.push_str(END_OF_WORD);
        }
        loop {
            let best = word.windows(2).filter_map(|p| self.ranks.get(&(p[0].clone(), p[1].clone()))).min().copied();
            let Some(rank) = best else { break };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && self.ranks.get(&(word[i].clone(), word[i + 1].clone())) == Some(&rank) {
                    merged.push(format!("{}{}", word[i], word[i + 1]));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
        }
        word
    }
}

/// Text cleanup as transformers' `CLIPTokenizer` does it: NFC, whitespace
/// runs to one space, trimmed, lowercase character by character (no
/// context-dependent final sigma).
fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    let spaced = nfc.split_whitespace().collect::<Vec<_>>().join(" ");
    spaced.chars().flat_map(char::to_lowercase).collect()
}

/// GPT-2's reversible byte -> printable character table.
fn byte_to_unicode() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap_or('\0')
        };
    }
    table
}

fn parse_merges(text: &str, path: &Path) -> Result<HashMap<(String, String), usize>> {
    let mut ranks = HashMap::new();
    let lines = text.lines().enumerate().filter(|(_, l)| !l.starts_with("#version"));
    for (rank, (line_no, line)) in lines.filter(|(_, l)| !l.trim().is_empty()).enumerate() {
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                ranks.entry((a.to_string(), b.to_string())).or_insert(rank);
            }
            _ => {
                return Err(DiffusionError::format(
                    path,
                    format!("line {}: expected two symbols separated by a space", line_no + 1),
                ))
            }
        }
    }
    Ok(ranks)
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| DiffusionError::io(path, e))
}

fn read_optional_json(path: &PathBuf) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = read_text(path)?;
    serde_json::from_str(&text).map(Some).map_err(|e| DiffusionError::format(path, format!("invalid JSON: {e}")))
}

/// A token setting is either a string or `{"content": "..."}`.
fn token_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    #[derive(serde::Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
        untruncated_count: usize,
    }

    #[test]
    fn matches_transformers_clip_tokenizer() {
        let dir = fixtures().join("clip-tokenizer");
        let tok = ClipTokenizer::from_folder(&dir).unwrap();
        let cases: Vec<Case> =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_cases.json")).unwrap()).unwrap();
        assert!(cases.len() >= 10);
        for case in &cases {
            let enc = tok.encode_padded(&case.text);
            assert_eq!(enc.ids, case.ids, "ids for {:?}", case.text);
            assert_eq!(
                enc.truncated,
                case.untruncated_count.saturating_sub(77),
                "truncation count for {:?}",
                case.text
            );
            assert_eq!(tok.tokenize(&case.text).len() + 2, case.untruncated_count);
        }
        assert!(cases.iter().any(|c| c.untruncated_count > 77));
    }

    #[test]
    fn long_prompt_chunks_into_windows() {
        let tok = ClipTokenizer::from_folder(&fixtures().join("clip-tokenizer")).unwrap();
        let text = "red house ".repeat(50); // 100 tokens
        let all = tok.tokenize(&text);
        assert_eq!(all.len(), 100);
        let enc = tok.encode_padded(&text);
        assert_eq!(enc.truncated, 25);
        let windows = tok.encode_chunks(&text, 3);
        assert_eq!(windows.len(), 3);
        assert_eq!(&windows[0][1..76], &all[..75]);
        assert_eq!(&windows[1][1..26], &all[75..]);
        assert_eq!(windows[1][26], tok.eos_id());
        assert_eq!(windows[2], tok.encode_padded("").ids);
        assert!(windows.iter().all(|w| w.len() == 77 && w[0] == tok.bos_id()));
    }

    #[test]
    fn sd21_folder_pads_with_exclamation_mark() {
        let tok = ClipTokenizer::from_folder(&fixtures().join("tiny-sd21/tokenizer")).unwrap();
        assert_eq!(tok.pad_id(), 0);
        let ids = tok.encode_padded("a cat").ids;
        assert_eq!(ids[0], tok.bos_id());
        let eos_at = ids.iter().position(|&i| i == tok.eos_id()).unwrap();
        assert!(ids[eos_at + 1..].iter().all(|&i| i == 0));
        let sd15 = ClipTokenizer::from_folder(&fixtures().join("tiny-sd15/tokenizer")).unwrap();
        assert_eq!(sd15.pad_id(), sd15.eos_id());
    }

    #[test]
    fn added_tokens_expand_to_their_ids() {
        let mut tok = ClipTokenizer::from_folder(&fixtures().join("tiny-sd15/tokenizer")).unwrap();
        let base = tok.vocab_size() as u32;
        let ids = tok.add_token("<tiny-style>", 2).unwrap();
        assert_eq!(ids, vec![base, base + 1]);
        assert_eq!(tok.vocab_size(), base as usize + 2);
        let plain = tok.tokenize("a house in style");
        let with = tok.tokenize("a house in <Tiny-Style> style");
        assert_eq!(with.len(), plain.len() + 2);
        let at = with.iter().position(|&i| i == ids[0]).unwrap();
        assert_eq!(&with[at..at + 2], &ids[..]);
        assert_eq!(with[..at], plain[..at]);
        assert!(tok.add_token("<tiny-style>", 1).is_err());
        assert!(tok.add_token("two words", 1).is_err());
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ClipTokenizer::from_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("vocab.json"), "{err}");
        std::fs::write(dir.path().join("vocab.json"), r#"{"a": 0}"#).unwrap();
        let err = ClipTokenizer::from_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("merges.txt"), "{err}");
        std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\na b\n").unwrap();
        let err = ClipTokenizer::from_folder(dir.path()).unwrap_err().to_string();
        assert!(err.contains("<|startoftext|>"), "{err}");
    }
}
