//! Anchored patterns that need no regex engine: `^` then a sequence of literals, classes
//! and greedy repetitions of a class, each repetition stopping where the next element
//! cannot start, with named or numbered groups around parts of the sequence.
//!
//! Such a pattern (`^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+) +`,
//! `^\d{4}-\d{2}-\d{2} `) has exactly one way to match a text: every repetition takes
//! what its class allows and the element after it must start right there, since a shorter
//! run would leave a character of the class where the next element cannot begin. So one
//! pass left to right, with no backtracking, gives the same match and the same group spans
//! as the `regex` crate (leftmost-first, greedy), at a few instructions per byte instead
//! of the tens its capture engines spend. [`SimplePattern::new`] accepts only patterns
//! where that holds and says `None` for anything else (alternations, optional parts,
//! lazy repetitions, repetitions of groups, look-arounds other than `^` first and `$`
//! last, a repetition whose class overlaps what follows it), which then go to the regex
//! engine as before.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// A pattern compiled for the one-pass matcher.
#[derive(Debug, Clone)]
pub struct SimplePattern {
    items: Vec<Item>,
    /// Capture slots: two per group index (start, end), group 0 included.
    slots: usize,
    /// Whether the pattern ends with `$` (the match must end at the end of the text).
    end: bool,
}

#[derive(Debug, Clone)]
enum Item {
    Lit(Box<[u8]>),
    Rep {
        set: Set,
        min: u32,
        max: u32,
    },
    Open(usize),
    Close(usize),
    /// A shortcut over the `skip` items after it, all of fixed width (literals and
    /// repetitions with `min == max`): when each byte of the text is a one-byte step of its
    /// position's table, they all match and take `tables.len()` bytes; otherwise the items
    /// themselves decide (a non-ASCII character, a mismatch).
    Fixed {
        tables: Box<[[bool; 256]]>,
        skip: usize,
    },
}

/// Puts a [`Item::Fixed`] shortcut before every run of two or more fixed-width items.
fn add_shortcuts(items: Vec<Item>) -> Vec<Item> {
    let fixed = |it: &Item| match it {
        Item::Lit(_) => true,
        Item::Rep { min, max, .. } => min == max && *min <= 64,
        _ => false,
    };
    let mut out = Vec::with_capacity(items.len() + 2);
    let mut i = 0;
    while i < items.len() {
        let run = items[i..].iter().take_while(|it| fixed(it)).count();
        if run >= 2 {
            let mut tables = Vec::new();
            for it in &items[i..i + run] {
                match it {
                    Item::Lit(l) => {
                        for &b in l.iter() {
                            let mut t = [false; 256];
                            t[b as usize] = true;
                            tables.push(t);
                        }
                    }
                    Item::Rep { set, min, .. } => {
                        let t = set.table.map(|x| x == ONE);
                        for _ in 0..*min {
                            tables.push(t);
                        }
                    }
                    _ => {}
                }
            }
            out.push(Item::Fixed {
                tables: tables.into(),
                skip: run,
            });
        }
        let n = run.max(1);
        out.extend(items[i..i + n].iter().cloned());
        i += n;
    }
    out
}

/// What one step of a repetition matches: per first byte, `NO`, `ONE` (that byte alone
/// is the step) or `MANY` (a non-ASCII character starts there: decoded and looked up in
/// `ranges`; invalid UTF-8 never matches a character class).
#[derive(Debug, Clone)]
struct Set {
    table: Box<[u8; 256]>,
    ranges: Box<[(char, char)]>,
}

const NO: u8 = 0;
const ONE: u8 = 1;
const MANY: u8 = 2;

impl Set {
    /// The bytes a match of one step can start with (for non-ASCII characters, every
    /// leading byte: a cautious over-estimate).
    fn first_bytes(&self) -> [bool; 256] {
        self.table.map(|t| t != NO)
    }

    /// A class of Unicode characters, UTF-8 encoded.
    fn unicode(ranges: Vec<(char, char)>) -> Set {
        let mut table = Box::new([NO; 256]);
        for &(s, e) in &ranges {
            for x in (s as u32)..=(e as u32).min(127) {
                table[x as usize] = ONE;
            }
        }
        if ranges.iter().any(|&(_, e)| e as u32 >= 0x80) {
            for t in table.iter_mut().take(0xF4 + 1).skip(0xC2) {
                *t = MANY;
            }
        }
        Set {
            table,
            ranges: ranges.into(),
        }
    }

    /// The length of the non-ASCII character at the start of `text` if it is in the set.
    #[cold]
    fn wide(&self, text: &[u8]) -> Option<usize> {
        let n = match text.first()? {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return None,
        };
        let s = std::str::from_utf8(text.get(..n)?).ok()?;
        let c = s.chars().next()?;
        let i = self.ranges.partition_point(|&(_, e)| e < c);
        (i < self.ranges.len() && self.ranges[i].0 <= c).then_some(n)
    }

    /// How many steps (at most `max`) match at the start of `text`, and their bytes.
    #[inline(always)]
    fn run(&self, text: &[u8], max: u32) -> (u32, usize) {
        let (mut n, mut i) = (0u32, 0usize);
        loop {
            // A run of one-byte steps, in a tight loop; then one wide character, if any.
            let lim = (text.len() - i).min((max - n) as usize);
            let k = text[i..i + lim]
                .iter()
                .position(|&b| self.table[b as usize] != ONE)
                .unwrap_or(lim);
            i += k;
            n += k as u32;
            if n >= max || text.get(i).is_none_or(|&b| self.table[b as usize] != MANY) {
                return (n, i);
            }
            match self.wide(&text[i..]) {
                Some(w) => {
                    i += w;
                    n += 1;
                }
                None => return (n, i),
            }
        }
    }
}

/// The set of a class.
fn class_set(c: &Class) -> Set {
    match c {
        Class::Bytes(b) => {
            let mut table = Box::new([NO; 256]);
            for r in b.iter() {
                for x in r.start()..=r.end() {
                    table[x as usize] = ONE;
                }
            }
            Set {
                table,
                ranges: Box::new([]),
            }
        }
        Class::Unicode(u) => Set::unicode(u.iter().map(|r| (r.start(), r.end())).collect()),
    }
}

/// The set of a literal of exactly one character, as a repetition's operand.
fn literal_set(lit: &[u8]) -> Option<Set> {
    match lit {
        [b] => {
            let mut table = Box::new([NO; 256]);
            table[*b as usize] = ONE;
            Some(Set {
                table,
                ranges: Box::new([]),
            })
        }
        _ => {
            let s = std::str::from_utf8(lit).ok()?;
            let mut cs = s.chars();
            let c = cs.next()?;
            if cs.next().is_some() {
                return None;
            }
            Some(Set::unicode(vec![(c, c)]))
        }
    }
}

fn flatten(h: &Hir, items: &mut Vec<Item>, slots: &mut usize) -> Option<()> {
    match h.kind() {
        HirKind::Empty => {}
        HirKind::Literal(l) => match items.last_mut() {
            Some(Item::Lit(prev)) => {
                let mut v = prev.to_vec();
                v.extend_from_slice(&l.0);
                *prev = v.into();
            }
            _ => items.push(Item::Lit(l.0.clone())),
        },
        HirKind::Class(c) => items.push(Item::Rep {
            set: class_set(c),
            min: 1,
            max: 1,
        }),
        HirKind::Repetition(r) => {
            if !r.greedy {
                return None;
            }
            let set = match r.sub.kind() {
                HirKind::Class(c) => class_set(c),
                HirKind::Literal(l) => literal_set(&l.0)?,
                _ => return None,
            };
            items.push(Item::Rep {
                set,
                min: r.min,
                max: r.max.unwrap_or(u32::MAX),
            });
        }
        HirKind::Capture(c) => {
            let i = c.index as usize;
            *slots = (*slots).max(2 * i + 2);
            items.push(Item::Open(i));
            flatten(&c.sub, items, slots)?;
            items.push(Item::Close(i));
        }
        HirKind::Concat(hs) => {
            for h in hs {
                flatten(h, items, slots)?;
            }
        }
        HirKind::Look(_) | HirKind::Alternation(_) => return None,
    }
    Some(())
}

impl SimplePattern {
    /// The one-pass form of `pattern` as `regex::bytes::Regex` reads it (Unicode on,
    /// default flags), or `None` when the pattern is not of that shape or a repetition
    /// could give back characters to what follows it.
    pub fn new(pattern: &str) -> Option<SimplePattern> {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()?;
        let parts: &[Hir] = match hir.kind() {
            HirKind::Concat(hs) => hs,
            _ => std::slice::from_ref(&hir),
        };
        let (first, mut rest) = parts.split_first()?;
        if !matches!(first.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let mut end = false;
        if let Some((last, init)) = rest.split_last()
            && matches!(last.kind(), HirKind::Look(Look::End))
        {
            end = true;
            rest = init;
        }
        let mut items = Vec::new();
        let mut slots = 2;
        for h in rest {
            flatten(h, &mut items, &mut slots)?;
        }
        // Every repetition of variable length must stop where the next element cannot
        // start; a next element that may be empty is refused outright.
        for (i, it) in items.iter().enumerate() {
            let Item::Rep { set, min, max } = it else {
                continue;
            };
            if min == max {
                continue;
            }
            let next = items[i + 1..]
                .iter()
                .find(|n| matches!(n, Item::Lit(_) | Item::Rep { .. }));
            let follow: [bool; 256] = match next {
                None => continue,
                Some(Item::Lit(l)) => {
                    let mut t = [false; 256];
                    t[*l.first()? as usize] = true;
                    t
                }
                Some(Item::Rep { set, min, .. }) if *min >= 1 => set.first_bytes(),
                Some(_) => return None,
            };
            let mine = set.first_bytes();
            if mine.iter().zip(follow.iter()).any(|(a, b)| *a && *b) {
                return None;
            }
        }
        Some(SimplePattern {
            items: add_shortcuts(items),
            slots,
            end,
        })
    }

    /// The number of capture slots [`SimplePattern::captures`] fills: two per group.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Whether `text` matches.
    #[inline]
    pub fn is_match(&self, text: &[u8]) -> bool {
        self.run(text, &mut []).is_some()
    }

    /// Matches `text`, filling `slots` (at least [`SimplePattern::slots`] long) with the
    /// start and end of every group, group 0 being the whole match; `false` when it does
    /// not match (the slots then hold nothing of use).
    #[inline]
    pub fn captures(&self, text: &[u8], slots: &mut [usize]) -> bool {
        match self.run(text, slots) {
            Some(end) => {
                if slots.len() >= 2 {
                    slots[0] = 0;
                    slots[1] = end;
                }
                true
            }
            None => false,
        }
    }

    #[inline]
    fn run(&self, text: &[u8], slots: &mut [usize]) -> Option<usize> {
        let mut pos = 0;
        let mut at = 0;
        while let Some(it) = self.items.get(at) {
            at += 1;
            match it {
                Item::Fixed { tables, skip } => {
                    if let Some(t) = text.get(pos..pos + tables.len())
                        && t.iter()
                            .zip(tables.iter())
                            .all(|(&b, table)| table[b as usize])
                    {
                        pos += tables.len();
                        at += skip;
                    }
                }
                Item::Lit(l) => {
                    // Short literals: a loop beats a call to memcmp.
                    let end = pos + l.len();
                    let t = text.get(pos..end)?;
                    if t.iter().zip(l.iter()).any(|(a, b)| a != b) {
                        return None;
                    }
                    pos = end;
                }
                Item::Rep { set, min, max } => {
                    let (n, len) = set.run(&text[pos..], *max);
                    if n < *min {
                        return None;
                    }
                    pos += len;
                }
                Item::Open(i) => {
                    if let Some(s) = slots.get_mut(2 * i) {
                        *s = pos;
                    }
                }
                Item::Close(i) => {
                    if let Some(s) = slots.get_mut(2 * i + 1) {
                        *s = pos;
                    }
                }
            }
        }
        if self.end && pos != text.len() {
            return None;
        }
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::SimplePattern;

    /// Every shape accepted or refused as it should be.
    #[test]
    fn accepts_only_deterministic_anchored_sequences() {
        for ok in [
            r"^\d{4}-\d{2}-\d{2} ",
            r"^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+) +\[(?P<thread>[^\]]+)\] (?P<logger>\S+) - ",
            r"^(?P<a>\S+) (?P<b>\S+)$",
            r"^abc",
            r"^(?i)abc",
            r"^é+x",
            r"^",
        ] {
            assert!(SimplePattern::new(ok).is_some(), "{ok}");
        }
        for no in [
            r"\d{4}",          // not anchored
            r"^\d+\d",         // the run would give back
            r"^\S+ ?x",        // next element may be empty
            r"^(ab|c)",        // alternation
            r"^(ab)+",         // repetition of a group
            r"^\w+?x",         // lazy
            r"^a\b",           // word boundary
            r"(?m)^a",         // line anchor
            r"^\S+\]",         // \S includes ]
            r"^[^\]]+x",       // x is in [^\]]
            r"^(?P<x>\d+|-) ", // alternation
            r"^.+é",           // é is in .
        ] {
            assert!(SimplePattern::new(no).is_none(), "{no}");
        }
    }

    /// A small deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Same match and same group spans as the regex crate, on texts made to match, nearly
    /// match, and hold non-ASCII digits, spaces and invalid UTF-8.
    #[test]
    fn agrees_with_the_regex_crate() {
        // Each pattern with a text it matches, which the test then edits at random.
        let patterns: [(&str, &[u8]); 8] = [
            (r"^\d{4}-\d{2}-\d{2} ", b"2024-11-22 10:00"),
            (
                r"^(?P<time>\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3}) (?P<level>[A-Z]+) +\[(?P<thread>[^\]]+)\] (?P<logger>\S+) - ",
                b"2024-11-22 10:00:00,035 INFO  [main] com.example.X - hello",
            ),
            (r"^(?P<a>\S+) (?P<b>\w{2,3})", b"ab abcd"),
            (r"^(?P<a>[a-c]*)(?P<b>\d+)$", b"abc99"),
            (r"^(?i)ab(?P<x>[^ ]{1,4})", b"aBc ,"),
            (r"^(?-u)(?P<x>[\x80-\xff]+)a", b"\xc3\xa9\xffa"),
            ("^\u{e9}+(?P<n>[0-9]+)", "\u{e9}\u{e9}12".as_bytes()),
            (r"^(?P<w> +)\t", b"   \t"),
        ];
        let pieces: [&[u8]; 22] = [
            b"2024-11-22 10:00:00,035",
            b" INFO ",
            b"  [main] ",
            b"com.example.X",
            b" - ",
            b"0",
            b"9",
            b"-",
            b" ",
            b"\t",
            b"]",
            b"[",
            b"a",
            b"B",
            b"c",
            "é".as_bytes(),
            "٣".as_bytes(),
            "\u{a0}".as_bytes(),
            b"\xff",
            b"\xc3",
            b",",
            b":",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for (pat, sample) in patterns {
            let simple = SimplePattern::new(pat).unwrap_or_else(|| panic!("{pat} refused"));
            let re = regex::bytes::Regex::new(pat).unwrap_or_else(|e| panic!("{pat}: {e}"));
            let mut locs = re.capture_locations();
            let mut slots = vec![usize::MAX; simple.slots()];
            let (mut matched, mut refused) = (0, 0);
            for round in 0..20_000 {
                let mut text = Vec::new();
                if round % 4 == 0 {
                    for _ in 0..(rng.next() % 12) {
                        text.extend_from_slice(pieces[(rng.next() % pieces.len() as u64) as usize]);
                    }
                } else {
                    // The sample with up to two of its bytes replaced by a piece.
                    text.extend_from_slice(sample);
                    for _ in 0..(rng.next() % 3) {
                        let at = (rng.next() % (text.len() as u64 + 1)) as usize;
                        let cut = (at + (rng.next() % 2) as usize).min(text.len());
                        let piece = pieces[(rng.next() % pieces.len() as u64) as usize];
                        text.splice(at..cut, piece.iter().copied());
                    }
                }
                let want = re.captures_read(&mut locs, &text).is_some();
                slots.fill(usize::MAX);
                let got = simple.captures(&text, &mut slots);
                assert_eq!(got, want, "{pat} on {:?}", String::from_utf8_lossy(&text));
                assert_eq!(simple.is_match(&text), want);
                if want {
                    matched += 1;
                } else {
                    refused += 1;
                }
                if want {
                    for g in 0..locs.len() {
                        let have = (slots.get(2 * g) != Some(&usize::MAX))
                            .then(|| (slots[2 * g], slots[2 * g + 1]));
                        assert_eq!(have, locs.get(g), "{pat} group {g} on {text:?}");
                    }
                }
            }
            // Both outcomes are well exercised.
            assert!(
                matched > 2_000 && refused > 2_000,
                "{pat}: {matched} / {refused}"
            );
        }
    }

    /// Patterns made at random from pieces (classes, literals, repetitions, groups, some
    /// overlapping what follows them): every one accepted matches as the regex crate does
    /// on random texts, and enough of them are accepted and refused to mean something.
    #[test]
    fn random_patterns_accepted_agree_with_the_regex_crate() {
        let parts = [
            r"\d",
            r"\d{2}",
            r"\d+",
            r"\d*",
            r"[a-c]+",
            r"[a-c]{1,2}",
            r"\S+",
            r" ",
            r"-",
            r"x*",
            r"x?",
            r"\w{1,3}",
            r"[^\]]+",
            r"\]",
            r".",
            r"é",
            r"é+",
            r"\s+",
            r"[^ ]*",
            r"(?i:k)",
            r"[0-9a-f]{2,}",
            r"(?-u:[\x80-\xff])+",
            r"(?:ab)+",
            r"a|b",
        ];
        let alphabet: [&[u8]; 16] = [
            b"0",
            b"7",
            b"a",
            b"b",
            b"c",
            b"x",
            b"k",
            b"K",
            b" ",
            b"-",
            b"]",
            b"\t",
            "é".as_bytes(),
            "٣".as_bytes(),
            "\u{212a}".as_bytes(),
            b"\xff",
        ];
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let (mut accepted, mut refused, mut matched) = (0, 0, 0);
        for _ in 0..3_000 {
            let mut pat = String::from("^");
            let mut groups = 0;
            for _ in 0..1 + rng.next() % 5 {
                let part = parts[(rng.next() % parts.len() as u64) as usize];
                if rng.next().is_multiple_of(3) {
                    groups += 1;
                    pat.push_str(&format!("(?P<g{groups}>{part})"));
                } else {
                    pat.push_str(part);
                }
            }
            if rng.next().is_multiple_of(4) {
                pat.push('$');
            }
            let Ok(re) = regex::bytes::Regex::new(&pat) else {
                continue;
            };
            let Some(simple) = SimplePattern::new(&pat) else {
                refused += 1;
                continue;
            };
            accepted += 1;
            let mut locs = re.capture_locations();
            let mut slots = vec![usize::MAX; simple.slots()];
            for _ in 0..200 {
                let mut text = Vec::new();
                for _ in 0..rng.next() % 10 {
                    text.extend_from_slice(alphabet[(rng.next() % alphabet.len() as u64) as usize]);
                }
                let want = re.captures_read(&mut locs, &text).is_some();
                slots.fill(usize::MAX);
                assert_eq!(
                    simple.captures(&text, &mut slots),
                    want,
                    "{pat} on {text:?}"
                );
                if want {
                    matched += 1;
                    for g in 0..locs.len() {
                        let have = (slots.get(2 * g) != Some(&usize::MAX))
                            .then(|| (slots[2 * g], slots[2 * g + 1]));
                        assert_eq!(have, locs.get(g), "{pat} group {g} on {text:?}");
                    }
                }
            }
        }
        eprintln!("{accepted} accepted, {refused} refused, {matched} matches");
        assert!(
            accepted > 500 && refused > 500,
            "{accepted} accepted, {refused} refused"
        );
        assert!(matched > 20_000, "{matched} matches");
    }
}
