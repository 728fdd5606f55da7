//! Full-text search that works for Chinese as well as Latin text.
//!
//! SQLite's default tokenizer keeps a run of Han characters as one token, so a fragment of a Chinese name
//! finds nothing. The trigram tokenizer splits them, but cannot match a fragment shorter than three
//! characters, and most Chinese given names are two. So the text is segmented here before it reaches FTS5
//! (tokenizer `unicode61`): each CJK run is indexed as its overlapping bigrams, followed by its single
//! characters; other words are indexed whole and matched by prefix. A query of one CJK character matches
//! the unigram; two or more match as a phrase of consecutive bigrams, i.e. as a substring.

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x3400..=0x4DBF    // CJK Extension A
        | 0x4E00..=0x9FFF    // CJK Unified Ideographs
        | 0xAC00..=0xD7AF    // Hangul syllables
        | 0xF900..=0xFAFF    // CJK Compatibility Ideographs
        | 0x20000..=0x3134F) // Extensions B-G
}

enum Run<'a> {
    Cjk(Vec<char>),
    Word(&'a str),
}

fn runs(text: &str) -> Vec<Run<'_>> {
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    let mut cjk: Vec<char> = Vec::new();
    for (i, c) in text.char_indices() {
        if is_cjk(c) {
            if let Some(s) = word_start.take() {
                out.push(Run::Word(&text[s..i]));
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
            word_start.get_or_insert(i);
        } else {
            if let Some(s) = word_start.take() {
                out.push(Run::Word(&text[s..i]));
            }
            if !cjk.is_empty() {
                out.push(Run::Cjk(std::mem::take(&mut cjk)));
            }
        }
    }
    if let Some(s) = word_start {
        out.push(Run::Word(&text[s..]));
    }
    if !cjk.is_empty() {
        out.push(Run::Cjk(cjk));
    }
    out
}

/// How names sort in lists: Chinese characters by their pinyin with the tone (王 as `wang2`), every
/// other character case-insensitively, so that a grid's mixed list reads in one alphabetical order:
/// Li Wei, 黎明 (li2), 李华 (li3), 王芳, Zhang San. A syllable written in Latin letters, without a
/// tone, comes before the same syllable in characters.
pub fn sort_key(s: &str) -> String {
    use pinyin::ToPinyin;
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        match c.to_pinyin() {
            Some(p) => {
                out.push_str(p.with_tone_num_end());
                out.push(' ');
            }
            None => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The `PINYIN` collation of the store's connections: [`sort_key`] order, ties by the text itself.
pub fn compare_names(a: &str, b: &str) -> std::cmp::Ordering {
    sort_key(a).cmp(&sort_key(b)).then_with(|| a.cmp(b))
}

/// The text handed to FTS5 for indexing.
pub fn index_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for run in runs(text) {
        match run {
            Run::Word(w) => {
                out.push_str(w);
                out.push(' ');
            }
            Run::Cjk(chars) => {
                for pair in chars.windows(2) {
                    out.push(pair[0]);
                    out.push(pair[1]);
                    out.push(' ');
                }
                for c in &chars {
                    out.push(*c);
                    out.push(' ');
                }
            }
        }
    }
    out
}

/// The FTS5 MATCH expression for what a user typed, or None when it has nothing searchable.
/// Every token is quoted, so FTS5 syntax in the input is matched literally, never interpreted.
pub fn match_query(input: &str) -> Option<String> {
    let mut terms = Vec::new();
    for run in runs(input) {
        match run {
            Run::Word(w) => terms.push(format!("\"{}\"*", w.replace('"', "\"\""))),
            Run::Cjk(chars) if chars.len() == 1 => terms.push(format!("\"{}\"", chars[0])),
            Run::Cjk(chars) => {
                let bigrams: Vec<String> = chars
                    .windows(2)
                    .map(|p| format!("{}{}", p[0], p[1]))
                    .collect();
                terms.push(format!("\"{}\"", bigrams.join(" ")));
            }
        }
    }
    (!terms.is_empty()).then(|| terms.join(" AND "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cjk_into_bigrams_then_unigrams() {
        assert_eq!(index_text("王小明"), "王小 小明 王 小 明 ");
        assert_eq!(
            index_text("Li Wei 李伟, 幸福路12号"),
            "Li Wei 李伟 李 伟 幸福 福路 幸 福 路 12 号 "
        );
    }

    #[test]
    fn names_sort_by_pinyin_and_latin_letters_alike() {
        let mut names = vec![
            "Zhang San",
            "王芳",
            "李华",
            "Li Wei",
            "阿兰",
            "bob",
            "Anna",
            "王",
            "黎明",
        ];
        names.sort_by(|a, b| compare_names(a, b));
        assert_eq!(
            names,
            [
                "阿兰",
                "Anna",
                "bob",
                "Li Wei",
                "黎明",
                "李华",
                "王",
                "王芳",
                "Zhang San"
            ]
        );
        assert_eq!(sort_key("王芳"), "wang2 fang1 ");
    }

    #[test]
    fn queries_are_quoted() {
        assert_eq!(match_query("小明").as_deref(), Some("\"小明\""));
        assert_eq!(match_query("王小明").as_deref(), Some("\"王小 小明\""));
        assert_eq!(match_query("明").as_deref(), Some("\"明\""));
        assert_eq!(
            match_query("joh OR x").as_deref(),
            Some("\"joh\"* AND \"OR\"* AND \"x\"*")
        );
        assert_eq!(match_query("  ,;  "), None);
    }
}
