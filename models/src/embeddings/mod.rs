//! Textual-inversion embeddings (A1111's `embeddings/` folder, `--embeddings-dir`): each file's
//! name becomes a word of the prompt vocabulary that stands for its learned vectors.
//!
//! The prompt side (where a name occurs, how many token slots it takes) is in
//! `prompt::PromptChunks`; the text encoders take the vectors as token-embedding overrides.

mod file;

use std::path::{Path, PathBuf};

pub use file::{EncoderSlot, TextualInversion, Vectors};

type Result<T> = std::result::Result<T, PipelineError>;

use crate::clip::tokenizer::ClipTokenizer;
use crate::pipeline::PipelineError;
use crate::prompt::PromptEmbedding;

/// The embeddings of a folder, by name.
#[derive(Clone, Debug, Default)]
pub struct EmbeddingDb {
    embeddings: Vec<TextualInversion>,
    /// Files that could not be read, with why: listed, not fatal, as A1111 skips them.
    pub skipped: Vec<(PathBuf, String)>,
}

impl EmbeddingDb {
    /// Every `.safetensors` file under `dir` (recursively, as A1111 scans). Unreadable files and
    /// pickles (`.pt`, `.bin`) go to `skipped`; a missing or unreadable folder is an error.
    pub fn load_dir(dir: &Path) -> Result<EmbeddingDb> {
        let mut files = Vec::new();
        collect(dir, &mut files)?;
        files.sort();
        let mut db = EmbeddingDb::default();
        for path in files {
            match TextualInversion::open(&path) {
                Ok(e) => db.insert(e)?,
                Err(e) => db.skipped.push((path, e.to_string())),
            }
        }
        Ok(db)
    }

    /// Adds one embedding; two with the same name are refused (the prompt could not tell them apart).
    pub fn insert(&mut self, embedding: TextualInversion) -> Result<()> {
        if let Some(old) = self.get(&embedding.name) {
            return Err(PipelineError::model(
                &embedding.path,
                format!(
                    "embedding name {:?} is already taken by {}",
                    embedding.name,
                    old.path.display()
                ),
            ));
        }
        self.embeddings.push(embedding);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&TextualInversion> {
        self.embeddings.iter().find(|e| e.name == name)
    }

    pub fn all(&self) -> &[TextualInversion] {
        &self.embeddings
    }

    pub fn is_empty(&self) -> bool {
        self.embeddings.is_empty()
    }

    /// The embeddings named in any of `texts`, in folder order, for the infotext's `TI hashes`.
    /// CLIP lower-cases and splits words at non-alphanumerics, so a name counts where it occurs
    /// case-insensitively as a whole word (the tokens the chunker matches).
    pub fn used_in(&self, texts: &[&str]) -> Vec<&TextualInversion> {
        let texts: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
        self.embeddings
            .iter()
            .filter(|e| {
                let name = e.name.to_lowercase();
                texts.iter().any(|t| contains_word(t, &name))
            })
            .collect()
    }

    /// What the prompt chunker matches: each embedding's name as `tok` encodes it, index into
    /// `all()`. Names that encode to nothing (only punctuation the tokenizer drops) never match.
    pub fn prompt_entries(&self, tok: &ClipTokenizer) -> Result<Vec<PromptEmbedding>> {
        let mut entries = Vec::with_capacity(self.embeddings.len());
        for (index, e) in self.embeddings.iter().enumerate() {
            let ids = tok.encode(&e.name)?;
            if !ids.is_empty() {
                entries.push(PromptEmbedding {
                    name: e.name.clone(),
                    ids,
                    count: e.count(),
                    index,
                });
            }
        }
        Ok(entries)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PipelineError::model(dir, format!("cannot read the embeddings folder: {e}"))
    })?;
    for entry in entries {
        let path = entry
            .map_err(|e| PipelineError::model(dir, format!("cannot list: {e}")))?
            .path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| {
            // Pickles are collected too, so that they are listed as skipped with the reason.
            ["safetensors", "pt", "bin"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        }) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether `word` occurs in `text` with no letter or digit right before or after it.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::contains_word;

    #[test]
    fn names_match_as_whole_words() {
        assert!(contains_word("a kilnstyle cat", "kilnstyle"));
        assert!(contains_word("(kilnstyle:1.2),x", "kilnstyle"));
        assert!(!contains_word("a kilnstyles cat", "kilnstyle"));
        assert!(!contains_word("akilnstyle", "kilnstyle"));
        assert!(!contains_word("", "kilnstyle"));
    }
}
