//! Reversible encoding of local file names into names a service accepts.
//!
//! 1fichier refuses backslash, `<`, `>`, `"`, `'`, `$`, backquote, a space
//! at the start or end of a name, and control characters (including DEL).
//! A local name may contain any of them, so before a name is sent each
//! refused character is replaced by a look-alike, and listings map the
//! look-alikes back:
//!
//! | local                       | sent to the service                |
//! |-----------------------------|------------------------------------|
//! | `\` `<` `>` `"` `'` `$` `` ` `` | `＼` `＜` `＞` `＂` `＇` `＄` `｀` (full-width forms) |
//! | U+0000..U+001F              | U+2400..U+241F (control pictures `␀`..`␟`) |
//! | DEL (U+007F)                | U+2421 `␡`                          |
//! | leading / trailing space    | U+2420 `␠`                          |
//!
//! A local name can itself contain one of those look-alikes; such a
//! character is sent prefixed with the escape character U+201B `‛` so that
//! decoding leaves it alone. The escape character is itself escaped (doubled)
//! only when it is directly followed by something decoding would treat as
//! escaped, so names seen on the service that merely contain `‛` (uploaded
//! by other tools) survive a decode/encode cycle unchanged.
//!
//! Decoding: `‛` followed by a look-alike or by `‛` yields that next character
//! literally; any other look-alike is mapped back to the character it stands
//! for; everything else is kept. `decode(encode(x)) == x` for every string.
//!
//! `/` never occurs in a local name (the kernel splits paths on it), so it
//! needs no encoding.

/// Prefix marking a look-alike (or escape) character that is meant literally.
const ESCAPE: char = '\u{201B}';

/// Refused printable characters and the full-width form each is sent as.
const FULL_WIDTH: [(char, char); 7] = [
    ('\\', '\u{FF3C}'),
    ('<', '\u{FF1C}'),
    ('>', '\u{FF1E}'),
    ('"', '\u{FF02}'),
    ('\'', '\u{FF07}'),
    ('$', '\u{FF04}'),
    ('`', '\u{FF40}'),
];

const CONTROL_PICTURES: u32 = 0x2400;
const DEL_PICTURE: char = '\u{2421}';
const SPACE_PICTURE: char = '\u{2420}';

/// The character `c` (at an edge of the name or not) must be replaced by.
fn replacement(c: char, at_edge: bool) -> Option<char> {
    match c {
        ' ' if at_edge => Some(SPACE_PICTURE),
        '\u{0}'..='\u{1f}' => char::from_u32(CONTROL_PICTURES + c as u32),
        '\u{7f}' => Some(DEL_PICTURE),
        _ => FULL_WIDTH
            .iter()
            .find(|(plain, _)| *plain == c)
            .map(|(_, wide)| *wide),
    }
}

/// The character a look-alike stands for, if `c` is one.
fn original(c: char) -> Option<char> {
    match c {
        DEL_PICTURE => Some('\u{7f}'),
        // U+2400..=U+2420 stand for U+0000..=U+0020 (the space included).
        '\u{2400}'..='\u{2420}' => char::from_u32(c as u32 - CONTROL_PICTURES),
        _ => FULL_WIDTH
            .iter()
            .find(|(_, wide)| *wide == c)
            .map(|(plain, _)| *plain),
    }
}

fn is_look_alike(c: char) -> bool {
    original(c).is_some()
}

/// Whether decoding treats `ESCAPE` followed by `c` as an escape sequence.
fn escapes(c: char) -> bool {
    c == ESCAPE || is_look_alike(c)
}

/// The name to send to the service for the local name `name`.
pub fn encode(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let last = chars.len().saturating_sub(1);
    let mut out = String::with_capacity(name.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let at_edge = i == 0 || i == last;
        if let Some(r) = replacement(c, at_edge) {
            out.push(r);
        } else if is_look_alike(c) {
            out.push(ESCAPE);
            out.push(c);
        } else if c == ESCAPE {
            // The encoded form of the next character starts with a look-alike
            // or an escape exactly when the next character is refused, a
            // look-alike, or an escape itself.
            let next_needs_escape = chars.get(i + 1).is_some_and(|&n| {
                replacement(n, i + 1 == last).is_some() || is_look_alike(n) || n == ESCAPE
            });
            out.push(ESCAPE);
            if next_needs_escape {
                out.push(ESCAPE);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The local name for a name found on the service.
pub fn decode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ESCAPE {
            match chars.peek() {
                Some(&next) if escapes(next) => {
                    out.push(next);
                    chars.next();
                }
                _ => out.push(ESCAPE),
            }
        } else if let Some(o) = original(c) {
            out.push(o);
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `name` is free of everything the service refuses, i.e. can be
/// sent as it is (every output of [`encode`] is).
pub fn is_acceptable(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    let last = chars.len().saturating_sub(1);
    !chars
        .iter()
        .enumerate()
        .any(|(i, &c)| replacement(c, i == 0 || i == last).is_some())
}

/// A local name for a title a service keeps as free text (fii.one,
/// file.io): `/` and NUL, which no file name may hold, become look-alikes
/// (`∕`, `␀`), and a title that cannot name a file at all (empty, `.`,
/// `..`) gets a stable stand-in made from the file's id.
pub fn from_free_text(title: &str, id: &str) -> String {
    let cleaned: String = title
        .chars()
        .map(|c| match c {
            '/' => '\u{2215}',
            '\0' => '\u{2400}',
            c => c,
        })
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        let short: String = id.chars().take(12).collect();
        format!("untitled-{short}")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_text_titles_become_usable_names() {
        assert_eq!(from_free_text("a.jpg", "id"), "a.jpg");
        assert_eq!(from_free_text("a/b", "id"), "a\u{2215}b");
        assert_eq!(
            from_free_text("", "3f1c2b9e-8a7d-4e51"),
            "untitled-3f1c2b9e-8a7"
        );
        assert_eq!(
            from_free_text("..", "wcZ1UtYXYQd3"),
            "untitled-wcZ1UtYXYQd3"
        );
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn refused_characters_become_look_alikes() {
        assert_eq!(encode("a\\b<c>d\"e'f$g`h"), "a＼b＜c＞d＂e＇f＄g｀h");
        assert_eq!(encode(" x y "), "␠x y␠");
        assert_eq!(encode("tab\there\u{7f}"), "tab␉here␡");
        assert_eq!(encode("plain name.txt"), "plain name.txt");
    }

    #[test]
    fn look_alikes_in_local_names_are_escaped() {
        assert_eq!(encode("＄5"), "‛＄5");
        assert_eq!(decode("‛＄5"), "＄5");
        assert_eq!(decode("＄5"), "$5");
        assert_eq!(encode("a␠b"), "a‛␠b");
    }

    #[test]
    fn lone_escape_characters_are_left_alone() {
        assert_eq!(encode("it‛s"), "it‛s");
        assert_eq!(decode("it‛s"), "it‛s");
        assert_eq!(encode("‛"), "‛");
        assert_eq!(encode("‛$"), "‛‛＄");
        assert_eq!(decode("‛‛＄"), "‛$");
    }

    #[test]
    fn every_printable_ascii_byte_round_trips() {
        for b in 0x20u8..=0x7e {
            let c = b as char;
            for name in [
                c.to_string(),
                format!("{c}{c}"),
                format!("a{c}b"),
                format!("{c}middle{c}"),
            ] {
                let encoded = encode(&name);
                assert!(is_acceptable(&encoded), "{name:?} -> {encoded:?}");
                assert_eq!(decode(&encoded), name, "via {encoded:?}");
            }
        }
    }

    #[test]
    fn single_space_name_round_trips() {
        assert_eq!(encode(" "), "␠");
        assert_eq!(decode("␠"), " ");
        assert_eq!(decode(&encode("   ")), "   ");
    }

    fn tricky_char() -> impl Strategy<Value = char> {
        prop_oneof![
            (0x00u32..0x80).prop_map(|u| char::from_u32(u).unwrap()),
            Just(ESCAPE),
            Just(SPACE_PICTURE),
            Just(DEL_PICTURE),
            (0x2400u32..0x2422).prop_map(|u| char::from_u32(u).unwrap()),
            proptest::sample::select(FULL_WIDTH.iter().map(|(_, w)| *w).collect::<Vec<_>>()),
            any::<char>(),
        ]
    }

    proptest! {
        #[test]
        fn any_string_round_trips(chars in proptest::collection::vec(tricky_char(), 0..24)) {
            let name: String = chars.into_iter().collect();
            let encoded = encode(&name);
            prop_assert!(is_acceptable(&encoded), "{:?} -> {:?}", name, encoded);
            prop_assert_eq!(decode(&encoded), name);
        }

        #[test]
        fn arbitrary_unicode_round_trips(name in "\\PC{0,40}") {
            prop_assert_eq!(decode(&encode(&name)), name);
        }

        /// What lets 1fichier's statfs promise names of 250 bytes: no
        /// name has more characters once encoded than it has bytes.
        #[test]
        fn encoding_never_yields_more_characters_than_bytes(
            chars in proptest::collection::vec(tricky_char(), 0..64)
        ) {
            let name: String = chars.into_iter().collect();
            prop_assert!(encode(&name).chars().count() <= name.len(), "{:?}", name);
        }
    }
}
