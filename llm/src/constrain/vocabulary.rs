//! The vocabulary as llguidance needs it: a trie of each id's bytes, control tokens marked
//! special (a 0xFF byte, never valid UTF-8, then the name) so text can never spell them, and the
//! EOS ids. Building it walks the whole vocabulary, so it is built once per tokenizer and shared
//! (an `Arc`) by every grammar and request.

use std::collections::HashMap;
use std::sync::Arc;

use llguidance::earley::SlicedBiasComputer;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};
use llguidance::ParserFactory;

use super::{ConstraintError, Result};
use crate::tokenizer::Tokenizer;

pub struct TokenVocabulary {
    factory: ParserFactory,
    /// Ids that end the reply; allowed exactly when the grammar accepts.
    eos: Vec<u32>,
    /// Control token names to ids (for Lark grammars, which name them by id: `<[9]>`).
    specials: HashMap<String, u32>,
    size: usize,
}

impl std::fmt::Debug for TokenVocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVocabulary")
            .field("size", &self.size)
            .field("eos", &self.eos)
            .finish()
    }
}

/// llguidance's view of the tokenizer. Not canonical: the parser then never forces a
/// tokenization of its own and allows every token sequence that spells allowed text.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.greedy_tokenize(s)
    }

    fn tokenize_is_canonical(&self) -> bool {
        false
    }
}

impl TokenVocabulary {
    /// The vocabulary of `tokenizer`, ending replies with its EOS id.
    pub fn new(tokenizer: &Tokenizer) -> Result<Arc<TokenVocabulary>> {
        let eos = tokenizer.eos_id().ok_or_else(|| {
            ConstraintError::Vocabulary(format!(
                "{}: the tokenizer has no EOS token, so a constrained reply could not end",
                tokenizer.path().display()
            ))
        })?;
        let pieces = tokenizer
            .token_pieces()
            .map_err(|e| ConstraintError::Vocabulary(e.to_string()))?;
        TokenVocabulary::from_pieces(pieces, &[eos])
    }

    /// A vocabulary from each id's bytes and whether the id is a control token (then the bytes
    /// are its name); `eos` are the ids that end a reply (the first one is llguidance's EOS).
    pub fn from_pieces(pieces: Vec<(Vec<u8>, bool)>, eos: &[u32]) -> Result<Arc<TokenVocabulary>> {
        let size = pieces.len();
        let Some(&first_eos) = eos.first() else {
            return Err(ConstraintError::Vocabulary("no EOS id given".into()));
        };
        if let Some(bad) = eos.iter().find(|&&id| id as usize >= size) {
            return Err(ConstraintError::Vocabulary(format!(
                "EOS id {bad} is outside the vocabulary of {size}"
            )));
        }
        if size == 0 || size > u32::MAX as usize / 2 {
            return Err(ConstraintError::Vocabulary(format!(
                "a vocabulary of {size} ids cannot be matched"
            )));
        }
        let mut specials = HashMap::new();
        let mut words = Vec::with_capacity(size);
        for (id, (bytes, control)) in pieces.into_iter().enumerate() {
            if control {
                specials.insert(String::from_utf8_lossy(&bytes).into_owned(), id as u32);
                let mut word = Vec::with_capacity(bytes.len() + 1);
                word.push(TokTrie::SPECIAL_TOKEN_MARKER);
                word.extend_from_slice(&bytes);
                words.push(word);
            } else if bytes.first() == Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                // An ordinary token starting with byte 0xFF would read as a control token; 0xFF
                // never occurs in UTF-8, so no grammar allows it anyway: leave it out (no bytes).
                words.push(Vec::new());
            } else {
                words.push(bytes);
            }
        }
        // The EOS ids are special whatever the tokenizer calls them, so no text spells them.
        for &id in eos {
            let word = &mut words[id as usize];
            if word.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
                word.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
            }
        }
        let info = TokRxInfo::new(size as u32, first_eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(eos);
        let env: TokEnv = Arc::new(Env { trie });
        // llguidance's precomputed token sets for JSON string contents (what makes a mask inside
        // a long string cheap), less its whitespace one: kiln's JSON has no free whitespace, and
        // each set costs a pass over the vocabulary when the vocabulary is built.
        let slices: Vec<String> = SlicedBiasComputer::json_slices()
            .into_iter()
            .filter(|rx| !rx.starts_with(r"[\x20"))
            .collect();
        let mut factory = ParserFactory::new(&env, Default::default(), &slices)
            .map_err(|e| ConstraintError::Vocabulary(format!("cannot build the matcher: {e}")))?;
        // Warnings would go to stderr; errors come back as values.
        factory.quiet();
        Ok(Arc::new(TokenVocabulary {
            factory,
            eos: eos.to_vec(),
            specials,
            size,
        }))
    }

    /// Ids in the vocabulary; logits past it (a padded embedding table) are always masked.
    pub fn size(&self) -> usize {
        self.size
    }

    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The id of a control token by name (`[TOOL_CALLS]`).
    pub fn special_id(&self, name: &str) -> Option<u32> {
        self.specials.get(name).copied()
    }

    /// How a Lark grammar names a control token: by id, `<[9]>` (Mistral's `[NAME]` tokens do
    /// not fit llguidance's `<name>` syntax).
    pub fn special_lark(&self, name: &str) -> Option<String> {
        self.special_id(name).map(|id| format!("<[{id}]>"))
    }

    pub(crate) fn factory(&self) -> &ParserFactory {
        &self.factory
    }

    /// The bytes of an id (control tokens: 0xFF then the name), for tests and diagnostics.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        if id as usize >= self.size {
            return &[];
        }
        self.factory.tok_env().tok_trie().token(id)
    }
}
