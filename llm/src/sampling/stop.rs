//! Stop strings over streamed text: show what can no longer become a stop string, hold back the rest.

use super::error::{Result, SamplingError};

/// What one [`StopMatcher::push`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopStep {
    /// Text that is safe to show now; may be empty while a possible stop string is held back.
    Text(String),
    /// Stop string `stop` (its index) completed; `text` is the not yet shown text before it. The stop
    /// string itself and anything after it are dropped.
    Stopped { text: String, stop: usize },
}

/// Matches several stop strings over text arriving one token at a time, so a stop string split
/// across tokens is still found and never shown.
///
/// When several stop strings complete in the same text, the one that ends first wins (ties: the one
/// that starts first), which is what feeding the text one character at a time would give, so the
/// result does not depend on how the text was split into tokens.
#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// A suffix of the text so far that is a proper prefix of some stop string.
    held: String,
    stopped: Option<usize>,
}

impl StopMatcher {
    /// Empty stop strings are rejected (they would match before any text). No stop strings at all is
    /// fine: everything passes straight through.
    pub fn new<I, S>(stops: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let stops: Vec<String> = stops.into_iter().map(Into::into).collect();
        if let Some(index) = stops.iter().position(|s| s.is_empty()) {
            return Err(SamplingError::EmptyStopString { index });
        }
        Ok(Self {
            stops,
            held: String::new(),
            stopped: None,
        })
    }

    /// The index of the stop string that ended the text, if one has.
    pub fn stopped(&self) -> Option<usize> {
        self.stopped
    }

    /// Feeds the decoded text of one new token. After a stop every further push returns
    /// `Stopped` with empty text.
    pub fn push(&mut self, text: &str) -> StopStep {
        if let Some(stop) = self.stopped {
            return StopStep::Stopped {
                text: String::new(),
                stop,
            };
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.push_str(text);

        // Earliest-ending complete match; for one stop string its first occurrence ends first.
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                buf.find(s.as_str())
                    .map(|start| (start + s.len(), start, i))
            })
            .min();
        if let Some((_, start, stop)) = found {
            self.stopped = Some(stop);
            buf.truncate(start);
            return StopStep::Stopped { text: buf, stop };
        }

        // Hold back the longest suffix that could still grow into a stop string. Only the last
        // (longest stop - 1) bytes can be such a suffix; walk char boundaries from the left so the
        // first hit is the longest.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let from = buf.len().saturating_sub(longest.saturating_sub(1));
        let split = (from..buf.len())
            .filter(|&i| buf.is_char_boundary(i))
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&buf[i..])))
            .unwrap_or(buf.len());
        self.held = buf.split_off(split);
        StopStep::Text(buf)
    }

    /// The end of the stream (EOS or max tokens): releases the held-back text, which did not become
    /// a stop string. Empty after a stop.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns (everything shown, the stop index if any), `finish` included.
    fn run(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
        let mut m = StopMatcher::new(stops.iter().copied()).unwrap();
        let mut shown = String::new();
        for p in pieces {
            match m.push(p) {
                StopStep::Text(t) => shown.push_str(&t),
                StopStep::Stopped { text, stop } => {
                    shown.push_str(&text);
                    assert_eq!(m.finish(), "", "nothing may be released after a stop");
                    return (shown, Some(stop));
                }
            }
        }
        shown.push_str(&m.finish());
        (shown, None)
    }

    #[test]
    fn holds_back_a_possible_prefix_and_releases_it_when_it_breaks() {
        let mut m = StopMatcher::new(["</s>"]).unwrap();
        assert_eq!(m.push("Hello <"), StopStep::Text("Hello ".into()));
        assert_eq!(m.push("/"), StopStep::Text("".into()));
        assert_eq!(m.push("x"), StopStep::Text("</x".into()));
        assert_eq!(m.stopped(), None);
    }

    #[test]
    fn stop_string_across_token_boundaries_is_matched_and_not_shown() {
        let mut m = StopMatcher::new(["</s>"]).unwrap();
        assert_eq!(m.push("Hi <"), StopStep::Text("Hi ".into()));
        assert_eq!(m.push("/s"), StopStep::Text("".into()));
        assert_eq!(
            m.push(">tail"),
            StopStep::Stopped {
                text: "".into(),
                stop: 0
            }
        );
        assert_eq!(m.stopped(), Some(0));
        assert_eq!(
            m.push("more"),
            StopStep::Stopped {
                text: "".into(),
                stop: 0
            }
        );
        assert_eq!(m.finish(), "");
        assert_eq!(
            run(&["</s>"], &["a", "b<", "/", "s", ">", "c"]),
            ("ab".into(), Some(0))
        );
    }

    #[test]
    fn overlapping_prefixes_are_not_lost() {
        // "aab": after "a" then "a", the first "a" can no longer start "ab" and must be shown.
        let mut m = StopMatcher::new(["ab"]).unwrap();
        assert_eq!(m.push("a"), StopStep::Text("".into()));
        assert_eq!(m.push("a"), StopStep::Text("a".into()));
        assert_eq!(
            m.push("b"),
            StopStep::Stopped {
                text: "".into(),
                stop: 0
            }
        );
        assert_eq!(run(&["ab"], &["aab"]), ("a".into(), Some(0)));
        // A self-overlapping stop string: "aab" inside "aaab".
        assert_eq!(run(&["aab"], &["a", "a", "a", "b"]), ("a".into(), Some(0)));
    }

    #[test]
    fn text_before_the_stop_in_the_same_token_is_emitted() {
        assert_eq!(run(&["\n\n"], &["one\n", "\ntwo"]), ("one".into(), Some(0)));
        assert_eq!(run(&["STOP"], &["abcSTOPdef"]), ("abc".into(), Some(0)));
    }

    #[test]
    fn several_stop_strings_earliest_end_wins_whatever_the_split() {
        let stops = ["abc", "b", "xyz"];
        assert_eq!(run(&stops, &["abc"]), ("a".into(), Some(1)));
        assert_eq!(run(&stops, &["a", "b", "c"]), ("a".into(), Some(1)));
        // Same end: the longer (earlier-starting) one wins in both splits.
        assert_eq!(run(&["ab", "b"], &["ab"]), ("".into(), Some(0)));
        assert_eq!(run(&["ab", "b"], &["a", "b"]), ("".into(), Some(0)));
        assert_eq!(run(&stops, &["x", "y", "z"]), ("".into(), Some(2)));
    }

    #[test]
    fn multibyte_text_is_split_only_at_char_boundaries() {
        // "é" is 2 bytes, "日本" 6; the held suffix must be whole characters.
        let mut m = StopMatcher::new(["日本語"]).unwrap();
        assert_eq!(m.push("café 日"), StopStep::Text("café ".into()));
        assert_eq!(m.push("本"), StopStep::Text("".into()));
        assert_eq!(m.push("人"), StopStep::Text("日本人".into()));
        assert_eq!(
            run(&["日本語"], &["é日", "本", "語!"]),
            ("é".into(), Some(0))
        );
        // A stop string sharing a first byte with the text but not a first character.
        assert_eq!(run(&["é"], &["è", "ê"]), ("èê".into(), None));
    }

    #[test]
    fn finish_releases_what_is_held_back() {
        let mut m = StopMatcher::new(["END"]).unwrap();
        assert_eq!(m.push("the E"), StopStep::Text("the ".into()));
        assert_eq!(m.push("N"), StopStep::Text("".into()));
        assert_eq!(m.finish(), "EN");
        assert_eq!(run(&[], &["no ", "stops"]), ("no stops".into(), None));
    }

    #[test]
    fn empty_stop_strings_are_rejected() {
        let err = StopMatcher::new(["ok", ""]).unwrap_err();
        assert_eq!(err, SamplingError::EmptyStopString { index: 1 });
        assert!(err.to_string().contains("stop string 1 is empty"), "{err}");
    }
}
