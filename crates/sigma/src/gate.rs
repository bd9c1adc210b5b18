//! A conjunctive prefilter in front of rsigma's rule evaluation.
//!
//! rsigma's own candidate index keeps, for each rule, one set of witnesses of which at least one
//! must hold: of the parts of an `AND` it keeps only one. A process_creation rule written
//! `Image|endswith: '\powershell.exe'` and `CommandLine|contains: ...` is then a candidate for
//! every PowerShell process, and each candidate pays the full evaluation (rsigma lowercases the
//! value for each case-insensitive comparison). On a Windows stream most of the engine's time
//! went there.
//!
//! The gate keeps the whole positive structure of a rule's condition instead: a tree of `AND`s and
//! `OR`s over *atoms*, each a cheap, necessary fact about the record (a field is present, a field's
//! folded value equals a literal or contains one, some string of the record contains one). A record
//! marks the atoms it satisfies (one hash lookup and one scan for literals per field the rules
//! name: Teddy, a filter over the value's grams, or Aho-Corasick's automaton), and a rule reaches
//! rsigma only when its tree holds on those atoms. rsigma still decides every match: the gate is
//! a necessary condition and never a second evaluator.
//!
//! A rule whose tree holds is then checked against its *veto* ([`proof`]): facts that prove one
//! of its `not`s false (`not known_extension` on an `Image` ending in `.exe`). The veto is read
//! only for rules that passed their tree, and only where it is exactly rsigma's verdict.
//!
//! # Soundness
//!
//! The tree may only be weaker than the rule. Anything the analysis cannot prove necessary
//! becomes *open* (true), and a rule whose tree is open is evaluated on every record:
//! - `not`, `exists: false`, `null`, numeric, CIDR, timestamp-part, boolean and `expand`
//!   matchers give no literal. An item with a field still needs the field, so it falls back to
//!   the field's presence, as rsigma's own index does: every matcher but `null` is false on an
//!   absent field.
//! - A field reference (`fieldref`) needs both fields and, where both are strings, their folded
//!   texts equal (for its `contains`, `startswith` and `endswith` forms on ASCII, the other
//!   field's text inside this one's; outside ASCII, anything).
//! - `startswith`/`endswith` become "contains". A regex (which is also what rsigma makes of a
//!   value with wildcards) gives literals one of which every match contains: its literals and
//!   small classes are folded character by character, then regex-syntax's extractor reads the
//!   prefixes and suffixes, and [`inner_literals`] a literal between classes; the set whose
//!   shortest member is longest wins. A character that folds to two gives nothing. Literals of
//!   one character count only when the character is rare in logs (a backtick, a brace). A regex
//!   with no usable literal still needs its field to be as long as its shortest match (in bytes,
//!   of the text rsigma matches: the value, or its lowercase copy; a value outside ASCII is taken
//!   to be long enough).
//! - A record's keyword strings are scanned joined by NUL, so a keyword literal holding NUL
//!   gives nothing.
//! - Literals are compared folded: case-insensitive ones as rsigma stores them (lowercased),
//!   case-sensitive ones lowercased when every character outside ASCII is caseless (an emoji, a
//!   symbol: no case mapping or case-insensitive match relates it to another character, so a raw
//!   match implies a folded match), otherwise not at all. Values are folded as rsigma folds them:
//!   ASCII in place, anything else with `str::to_lowercase`, and both with `ſ` read as `s` (a
//!   case-insensitive regex equates them). Numbers and booleans are compared by the text rsigma
//!   gives them.
//! - Numeric equality (`EventID: 4688`) is an atom of its own, tested as rsigma tests it.
//! - Keyword atoms are checked on exactly the strings rsigma's keyword matcher sees
//!   (`Event::any_string_value`).
//!
//! `RuleSet::detect_unfiltered` evaluates every rule of a record's logsource without the gate;
//! the regression tests compare the two on every record of SigmaHQ's suite.

mod proof;

use std::cell::RefCell;

use aho_corasick::{AhoCorasick, MatchKind};
use rsigma_eval::matcher::GroupMode;
use rsigma_eval::{
    CompiledDetection, CompiledDetectionItem, CompiledMatcher, CompiledRule, Event, EventValue,
};
use rsigma_ir::IrStrOp;
use rsigma_parser::{ArrayQuantifier, ConditionExpr, Quantifier, SelectorPattern};
use rustc_hash::FxHashMap;

/// A literal shorter than this, extracted from a regex, selects nearly everything: the regex
/// falls back to its field's presence.
const MIN_REGEX_LITERAL: usize = 2;

/// A gate naming at most this many fields looks each one up in a record instead of first
/// visiting the record's keys (callgrind, the regression records: 16 was best of 8 to 64).
const PROBE_ALL_UP_TO: usize = 16;

/// Sets of at most this many needles (more than one) are searched with Teddy, aho-corasick's
/// SIMD search for a few patterns, instead of stepping its automaton byte by byte: a record's
/// joined keyword strings, about two thirds of the bytes the gate scans, meet sets of 20-odd
/// keywords (callgrind, the regression records: 128.8 M instructions for 5 passes with no
/// Teddy, 116.6 M with sets up to 64, 116.8 M up to 128; 11 % more events/s).
const PACKED_UP_TO: usize = 64;

/// Joins a record's strings for one keyword scan; keyword needles containing it are left to
/// rsigma (the rule is open).
const SEPARATOR: char = '\0';

/// One partition's prefilter.
pub(crate) struct Gate {
    /// Every field some rule names, with what the rules need of it.
    fields: Vec<FieldGate>,
    /// A record's top-level key -> the fields that can resolve under it (the name itself and
    /// its first dotted segment), so a record probes only fields it may have.
    by_key: FxHashMap<String, Vec<u32>>,
    /// Fields with escapes or positions in their names: always probed.
    unkeyed: Vec<u32>,
    /// Literals some string of the record must contain.
    keywords: Option<Needles>,
    /// Per atom, the rules anchored on it: those that need it or one of its siblings.
    anchored: Vec<Box<[u32]>>,
    /// Rules with no sound prefilter, evaluated on every record.
    open: Box<[u32]>,
    /// Per rule, its tree (`None` for open rules).
    trees: Vec<Option<Test>>,
    /// Per rule, facts of a record under which it cannot match ([`proof`]).
    vetoes: Box<[Option<proof::Proof>]>,
    /// Field references (`fieldref`): pairs of fields compared per record.
    references: Box<[Reference]>,
    atoms: usize,
}

/// A `fieldref` item's necessary condition: both fields present and, where both are strings,
/// the folded texts equal (or, for the substring forms, one in the other).
struct Reference {
    field: String,
    other: String,
    substring: bool,
    atom: u32,
}

struct FieldGate {
    name: String,
    presence: Option<u32>,
    /// Folded literal -> atom.
    exact: FxHashMap<String, u32>,
    /// The byte lengths of the exact literals: an ASCII value of another length equals none of
    /// them and is neither copied nor lowercased for the lookup.
    exact_lengths: ExactLengths,
    contains: Option<Needles>,
    /// rsigma's numeric equalities, by value.
    numbers: Vec<(f64, u32)>,
    /// Minimum lengths, ascending.
    lengths: Vec<(usize, u32)>,
}

struct Needles {
    scan: Scan,
    /// Pattern index -> atom.
    atoms: Box<[u32]>,
}

/// How a set of needles is searched for.
enum Scan {
    /// aho-corasick's automaton, ignoring ASCII case.
    Automaton(AhoCorasick),
    /// A few needles: a SIMD search (Teddy) over text whose ASCII is lowercased, restarted after
    /// each match with every needle compared at the match's start.
    Packed {
        searcher: aho_corasick::packed::Searcher,
        needles: Box<[Box<[u8]>]>,
    },
    /// Many needles: each filed under one of its four-byte grams, found by testing every gram
    /// of the text against a bit filter and comparing the needles filed under the few that pass.
    Grams(Box<Grams>),
    /// One needle, ASCII lowercased: its first byte found by memchr (either ASCII case), the
    /// rest compared ignoring ASCII case.
    One(Box<[u8]>),
}

/// Bytes in the gram a needle of at least that many bytes is filed under; shorter needles
/// are filed whole, as grams of two or three bytes.
const GRAM: usize = 4;

/// A gram of `W` bytes with its ASCII letters lowercased (and every other byte mapped alike:
/// `| 0x20` is a function of the byte, so a needle's gram and the same text folded the same way
/// agree).
#[inline]
fn gram<const W: usize>(bytes: [u8; W]) -> u32 {
    let mut value = 0u32;
    for (shift, byte) in bytes.iter().enumerate() {
        value |= u32::from(byte | 0x20) << (8 * shift);
    }
    value
}

/// The grams of `W` bytes of a text, by position.
fn grams<const W: usize>(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .windows(W)
        .filter_map(|window| <[u8; W]>::try_from(window).ok())
        .map(gram::<W>)
}

/// The multiplier of the filters' hash (Fibonacci hashing).
const GRAM_HASH: u32 = 0x9E37_79B1;

/// Filter bits per gram filed: about 3 % of a text's grams pass by chance.
const FILTER_BITS_PER_GRAM: usize = 32;

/// Needles found through their grams (see [`Scan::Grams`]). The search is exact: a needle
/// occurring at `p` has its filed gram at `p + offset`, where the text's gram passes the filter
/// and the needle is compared.
///
/// Stepping aho-corasick's overlapping automaton costs a dependent load and a transition search
/// per byte; a gram's filter test is a load, a multiply and a bit test, independent from one
/// byte to the next (callgrind, the regression records: a tenth of the automaton's instructions
/// for the same text).
struct Grams {
    /// Needles of [`GRAM`] bytes or more, of three and of two bytes.
    levels: [Option<GramLevel>; 3],
    /// The needles, ASCII lowercased, by pattern index.
    needles: Box<[Box<[u8]>]>,
    /// Needles under [`GRAM`] bytes when there are at most [`PACKED_UP_TO`] of them (one Teddy
    /// search over the lowercased text, instead of a pass of grams per width for a handful of
    /// needles), otherwise the needles of one byte; searched on their own.
    short: Option<Needles>,
}

/// The needles filed under grams of one width.
struct GramLevel {
    /// One bit per hash of a filed gram.
    filter: Box<[u64]>,
    /// `32 - log2(filter bits)`.
    shift: u32,
    /// Gram -> the needles filed under it, with the gram's offset in each.
    filed: FxHashMap<u32, Box<[(u32, u32)]>>,
}

impl GramLevel {
    fn build(filed: FxHashMap<u32, Vec<(u32, u32)>>) -> Option<Self> {
        if filed.is_empty() {
            return None;
        }
        let bits = (filed.len() * FILTER_BITS_PER_GRAM)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 22);
        let shift = 32 - bits.trailing_zeros();
        let mut filter = vec![0u64; bits / 64].into_boxed_slice();
        for &gram in filed.keys() {
            let bit = (gram.wrapping_mul(GRAM_HASH) >> shift) as usize;
            *filter.get_mut(bit / 64)? |= 1 << (bit % 64);
        }
        Some(Self {
            filter,
            shift,
            filed: filed
                .into_iter()
                .map(|(gram, list)| (gram, list.into_boxed_slice()))
                .collect(),
        })
    }

    /// Marks the needles found at the text's grams of `W` bytes.
    fn mark<const W: usize>(&self, bytes: &[u8], grams: &Grams, atoms: &[u32], hits: &mut Hits) {
        for (at, gram) in self::grams::<W>(bytes).enumerate() {
            self.probe(gram, at, bytes, grams, atoms, hits);
        }
    }

    /// Marks the needles filed under `gram` that occur where it stands, at `at`.
    #[inline(always)]
    fn probe(
        &self,
        gram: u32,
        at: usize,
        bytes: &[u8],
        grams: &Grams,
        atoms: &[u32],
        hits: &mut Hits,
    ) {
        let bit = (gram.wrapping_mul(GRAM_HASH) >> self.shift) as usize;
        if self
            .filter
            .get(bit / 64)
            .is_none_or(|word| word & (1 << (bit % 64)) == 0)
        {
            return;
        }
        let Some(list) = self.filed.get(&gram) else {
            return;
        };
        for &(needle, offset) in list.iter() {
            let Some(start) = at.checked_sub(offset as usize) else {
                continue;
            };
            let Some(pattern) = grams.needles.get(needle as usize) else {
                continue;
            };
            if bytes
                .get(start..start + pattern.len())
                .is_some_and(|found| found.eq_ignore_ascii_case(pattern))
                && let Some(&atom) = atoms.get(needle as usize)
            {
                hits.set(atom);
            }
        }
    }
}

impl Grams {
    /// Files each needle of at least [`GRAM`] bytes under its gram the fewest other needles
    /// share, so a common gram of the text (`.exe`) meets few needles.
    fn build(patterns: &[String], atoms: &[u32]) -> Option<Self> {
        let needles: Box<[Box<[u8]>]> = patterns
            .iter()
            .map(|pattern| pattern.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect();
        let mut shared: FxHashMap<u32, u32> = FxHashMap::default();
        for needle in needles.iter() {
            let mut distinct: Vec<u32> = grams::<GRAM>(needle).collect();
            distinct.sort_unstable();
            distinct.dedup();
            for gram in distinct {
                *shared.entry(gram).or_default() += 1;
            }
        }
        let mut filed: [FxHashMap<u32, Vec<(u32, u32)>>; 3] = Default::default();
        let mut short = Vec::new();
        let below_gram = needles.iter().filter(|needle| needle.len() < GRAM).count();
        let short_up_to = if below_gram <= PACKED_UP_TO {
            GRAM - 1
        } else {
            1
        };
        for (index, needle) in needles.iter().enumerate() {
            if needle.is_empty() {
                return None;
            }
            if needle.len() <= short_up_to {
                short.push((patterns.get(index)?.clone(), *atoms.get(index)?));
                continue;
            }
            let (level, offset, gram) = match needle.len() {
                // Empty needles returned and one-byte ones went to `short` above.
                0 | 1 => return None,
                2 => (2, 0, grams::<2>(needle).next()?),
                3 => (1, 0, grams::<3>(needle).next()?),
                _ => {
                    let (offset, gram) = grams::<GRAM>(needle)
                        .enumerate()
                        .min_by_key(|(_, gram)| shared.get(gram).copied().unwrap_or(0))?;
                    (0, offset, gram)
                }
            };
            filed
                .get_mut(level)?
                .entry(gram)
                .or_default()
                .push((index as u32, offset as u32));
        }
        let [four, three, two] = filed;
        Some(Self {
            levels: [
                GramLevel::build(four),
                GramLevel::build(three),
                GramLevel::build(two),
            ],
            needles,
            // A few go to Teddy, more to an automaton.
            short: Needles::build_scanned(short),
        })
    }

    fn mark(&self, text: &str, atoms: &[u32], hits: &mut Hits) {
        if let Some(short) = &self.short {
            short.mark(text, hits);
        }
        let bytes = text.as_bytes();
        let [four, three, two] = &self.levels;
        // A pass per width: one loop testing three grams at each position ran slower.
        if let Some(level) = four {
            level.mark::<GRAM>(bytes, self, atoms, hits);
        }
        if let Some(level) = three {
            level.mark::<3>(bytes, self, atoms, hits);
        }
        if let Some(level) = two {
            level.mark::<2>(bytes, self, atoms, hits);
        }
    }
}

impl Needles {
    /// Teddy for a few needles, grams for many (an automaton if grams cannot be built), an
    /// automaton for one.
    fn build(needles: Vec<(String, u32)>) -> Option<Self> {
        if needles.len() <= PACKED_UP_TO {
            return Self::build_scanned(needles);
        }
        let (patterns, atoms): (Vec<String>, Vec<u32>) = needles.into_iter().unzip();
        match Grams::build(&patterns, &atoms) {
            Some(grams) => Some(Self {
                scan: Scan::Grams(Box::new(grams)),
                atoms: atoms.into_boxed_slice(),
            }),
            None => Self::automaton(&patterns, atoms),
        }
    }

    /// [`Needles::build`] without grams: Teddy or the automaton.
    fn build_scanned(needles: Vec<(String, u32)>) -> Option<Self> {
        if needles.is_empty() {
            return None;
        }
        let (patterns, atoms): (Vec<String>, Vec<u32>) = needles.into_iter().unzip();
        if let [pattern] = patterns.as_slice()
            && !pattern.is_empty()
        {
            return Some(Self {
                scan: Scan::One(pattern.to_ascii_lowercase().into_bytes().into_boxed_slice()),
                atoms: atoms.into_boxed_slice(),
            });
        }
        if patterns.len() > 1
            && patterns.len() <= PACKED_UP_TO
            && let Some(packed) = Self::packed(&patterns, &atoms)
        {
            return Some(packed);
        }
        Self::automaton(&patterns, atoms)
    }

    /// Teddy, when the CPU has it and no needle is empty.
    fn packed(patterns: &[String], atoms: &[u32]) -> Option<Self> {
        // ASCII case is ignored as the automaton ignores it: needles and text lowercased.
        let needles: Box<[Box<[u8]>]> = patterns
            .iter()
            .map(|pattern| pattern.to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect();
        let mut config = aho_corasick::packed::Config::new();
        config.match_kind(aho_corasick::packed::MatchKind::LeftmostFirst);
        let searcher = config.builder().extend(needles.iter()).build()?;
        Some(Self {
            scan: Scan::Packed { searcher, needles },
            atoms: atoms.into(),
        })
    }

    fn automaton(patterns: &[String], atoms: Vec<u32>) -> Option<Self> {
        // Overlapping search needs the standard match kind: a needle inside another must still
        // mark its own atom. Needles are folded; ASCII case-insensitivity lets ASCII values be
        // scanned without a lowercase copy.
        // No prefilter: the automaton's own for a set (rare bytes, or Teddy handing every
        // candidate back to the automaton) cost more than stepping the automaton (callgrind,
        // the regression suite: 1-2 % more instructions). A single needle never gets here
        // (`Scan::One`, memchr). Larger sets hold long lists of paths and command-line
        // fragments: an automaton's DFA for those up to 1,000 needles saved 6 % of
        // instructions, no measurable time, for 40 MB more.
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .ascii_case_insensitive(true)
            .build(patterns)
            .ok()?;
        Some(Self {
            scan: Scan::Automaton(automaton),
            atoms: atoms.into_boxed_slice(),
        })
    }

    /// Whether [`Needles::mark`] needs its text's ASCII lowercased.
    fn wants_lowercase(&self) -> bool {
        match &self.scan {
            Scan::Packed { .. } => true,
            Scan::Automaton(_) | Scan::One(_) => false,
            Scan::Grams(grams) => grams.short.as_ref().is_some_and(Needles::wants_lowercase),
        }
    }

    fn mark(&self, folded: &str, hits: &mut Hits) {
        match &self.scan {
            Scan::Automaton(automaton) => {
                for found in automaton.find_overlapping_iter(folded) {
                    if let Some(&atom) = self.atoms.get(found.pattern().as_usize()) {
                        hits.set(atom);
                    }
                }
            }
            Scan::Grams(grams) => grams.mark(folded, &self.atoms, hits),
            Scan::One(needle) => {
                if let Some(&atom) = self.atoms.first()
                    && contains_ignoring_ascii_case(folded.as_bytes(), needle)
                {
                    hits.set(atom);
                }
            }
            Scan::Packed { searcher, needles } => {
                let text = folded.as_bytes();
                let mut at = 0;
                // Every needle occurring at or after `at` starts at or after the leftmost
                // match's start, and the ones starting there are all compared.
                while let Some(found) =
                    searcher.find_in(text, aho_corasick::Span::from(at..text.len()))
                {
                    let rest = text.get(found.start()..).unwrap_or_default();
                    for (needle, &atom) in needles.iter().zip(self.atoms.iter()) {
                        if rest.starts_with(needle) {
                            hits.set(atom);
                        }
                    }
                    at = found.start() + 1;
                    if at > text.len() {
                        break;
                    }
                }
            }
        }
    }
}

/// Whether `needle` (ASCII lowercased, not empty) occurs in `text`, ignoring ASCII case.
fn contains_ignoring_ascii_case(text: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut at = 0;
    while let Some(found) = text
        .get(at..)
        .and_then(|tail| memchr::memchr2(first, first.to_ascii_uppercase(), tail))
    {
        let start = at + found + 1;
        if text
            .get(start..start + rest.len())
            .is_some_and(|candidate| candidate.eq_ignore_ascii_case(rest))
        {
            return true;
        }
        at = start;
    }
    false
}

/// The buffers [`Gate::select`] reuses, one set per thread: a record allocates none of them.
#[derive(Default)]
struct Scratch {
    hits: Hits,
    /// Per field, whether the record may have it.
    probe: Vec<bool>,
    /// Per rule, whether its tree was tested.
    seen: Vec<bool>,
    /// A value folded for comparison.
    text: String,
    /// The record's strings joined for the keyword scan, ASCII lowercased.
    joined: String,
    /// The [`RecordScan`] whose record `joined` holds (0: none).
    joined_for: u64,
}

/// What the gates of the partitions one record meets share: its keyword strings are joined once.
/// One per record. Each has its own id, so a thread's buffers are reused only for the record
/// that filled them, whatever else ran on the thread in between (a rayon thread waiting on a
/// partition's first build can take up another record).
pub(crate) struct RecordScan {
    id: u64,
}

impl RecordScan {
    pub(crate) fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// A rule's necessary condition over atoms.
#[derive(Debug, Clone)]
enum Node {
    Atom(u32),
    All(Box<[Node]>),
    Any(Box<[Node]>),
}

/// A [`Node`] as it is tested on a record: the atoms of an `Any` (a rule's list of values,
/// which the analysis numbers consecutively) become masks over the words of [`Hits`], so a list
/// of fifty values costs a word or two, not fifty bit tests.
#[derive(Debug)]
enum Test {
    Atom(u32),
    All(Box<[Test]>),
    Any(Box<[Test]>),
    /// (word, mask) pairs, one of which must meet a set bit.
    AnyMask(Box<[(u32, u64)]>),
}

impl Test {
    fn of(node: &Node) -> Self {
        match node {
            Node::Atom(atom) => Test::Atom(*atom),
            Node::All(children) => Test::All(children.iter().map(Test::of).collect()),
            Node::Any(children) => {
                let mut masks: Vec<(u32, u64)> = Vec::new();
                let mut others = Vec::new();
                for child in children {
                    match child {
                        Node::Atom(atom) => {
                            let (word, bit) = (atom / 64, 1u64 << (atom % 64));
                            match masks.iter_mut().find(|(have, _)| *have == word) {
                                Some((_, mask)) => *mask |= bit,
                                None => masks.push((word, bit)),
                            }
                        }
                        other => others.push(Test::of(other)),
                    }
                }
                if !masks.is_empty() {
                    others.insert(0, Test::AnyMask(masks.into_boxed_slice()));
                }
                match others.len() {
                    1 => others.remove(0),
                    _ => Test::Any(others.into_boxed_slice()),
                }
            }
        }
    }

    fn holds(&self, hits: &Hits) -> bool {
        match self {
            Test::Atom(atom) => hits.get(*atom),
            Test::All(children) => children.iter().all(|child| child.holds(hits)),
            Test::Any(children) => children.iter().any(|child| child.holds(hits)),
            Test::AnyMask(masks) => masks.iter().any(|&(word, mask)| {
                hits.words
                    .get(word as usize)
                    .is_some_and(|bits| bits & mask != 0)
            }),
        }
    }
}

/// What the analysis knows of a part of a rule: nothing (`Open`), or a tree.
enum Analysis {
    Open,
    Tree(Node),
}

/// The atoms a record satisfies, and which of them were set (to enumerate them cheaply).
#[derive(Default)]
struct Hits {
    words: Vec<u64>,
    set: Vec<u32>,
}

impl Hits {
    /// No atom set, room for `atoms`.
    fn reset(&mut self, atoms: usize) {
        self.words.clear();
        self.words.resize(atoms.div_ceil(64), 0);
        self.set.clear();
    }

    fn set(&mut self, atom: u32) {
        let (word, bit) = (atom as usize / 64, 1u64 << (atom % 64));
        if let Some(slot) = self.words.get_mut(word)
            && *slot & bit == 0
        {
            *slot |= bit;
            self.set.push(atom);
        }
    }

    fn get(&self, atom: u32) -> bool {
        self.words
            .get(atom as usize / 64)
            .is_some_and(|word| word & (1u64 << (atom % 64)) != 0)
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum AtomKey {
    Presence(u32),
    Exact(u32, String),
    Contains(u32, String),
    /// rsigma's numeric equality on the field (the bits of the `f64`).
    Number(u32, u64),
    /// The field has a string of at least this many bytes.
    MinLength(u32, usize),
    Keyword(String),
    /// A field reference: the field, the other field, whether a substring test. Its fields
    /// are looked up by the reference alone, not scanned as the other atoms' fields are.
    Reference(String, String, bool),
}

impl AtomKey {
    /// Lower is more selective; used to pick the atoms a rule is found by.
    fn rank(&self) -> u8 {
        match self {
            AtomKey::Exact(..) => 0,
            AtomKey::Reference(..) => 1,
            AtomKey::Contains(_, needle) if needle.len() >= 8 => 1,
            AtomKey::Contains(..) => 2,
            AtomKey::Keyword(needle) if needle.len() >= 8 => 3,
            AtomKey::Number(..) => 3,
            AtomKey::Keyword(_) => 4,
            AtomKey::MinLength(..) => 5,
            AtomKey::Presence(_) => 6,
        }
    }
}

#[derive(Default)]
struct Builder {
    field_ids: FxHashMap<String, u32>,
    field_names: Vec<String>,
    atom_ids: FxHashMap<AtomKey, u32>,
    atoms: Vec<AtomKey>,
}

impl Builder {
    fn field(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.field_ids.get(name) {
            return id;
        }
        let id = self.field_names.len() as u32;
        self.field_names.push(name.to_owned());
        self.field_ids.insert(name.to_owned(), id);
        id
    }

    fn atom(&mut self, key: AtomKey) -> Analysis {
        let next = self.atoms.len() as u32;
        let id = *self.atom_ids.entry(key.clone()).or_insert_with(|| {
            self.atoms.push(key);
            next
        });
        Analysis::Tree(Node::Atom(id))
    }

    fn rule(&mut self, rule: &CompiledRule) -> Analysis {
        if rule.conditions.is_empty() {
            return Analysis::Open;
        }
        let parts: Vec<Analysis> = rule
            .conditions
            .iter()
            .map(|condition| self.condition(condition, rule))
            .collect();
        any_of(parts)
    }

    fn condition(&mut self, condition: &ConditionExpr, rule: &CompiledRule) -> Analysis {
        match condition {
            ConditionExpr::Identifier(name) => match rule.detections.get(name) {
                Some(detection) => self.detection(detection),
                None => Analysis::Open,
            },
            ConditionExpr::And(parts) => {
                let parts = parts
                    .iter()
                    .map(|part| self.condition(part, rule))
                    .collect();
                all_of(parts)
            }
            ConditionExpr::Or(parts) => {
                let parts = parts
                    .iter()
                    .map(|part| self.condition(part, rule))
                    .collect();
                any_of(parts)
            }
            ConditionExpr::Not(_) => Analysis::Open,
            ConditionExpr::Selector {
                quantifier,
                pattern,
            } => {
                let parts: Vec<Analysis> = named_detections(rule, pattern)
                    .into_iter()
                    .map(|detection| self.detection(detection))
                    .collect();
                match quantifier {
                    // `all of` nothing and `0 of` hold vacuously.
                    _ if parts.is_empty() => Analysis::Open,
                    Quantifier::Count(0) => Analysis::Open,
                    Quantifier::All => all_of(parts),
                    // At least one of them must hold.
                    Quantifier::Any | Quantifier::Count(_) => any_of(parts),
                }
            }
        }
    }

    fn detection(&mut self, detection: &CompiledDetection) -> Analysis {
        match detection {
            CompiledDetection::AllOf(items) => {
                let parts = items.iter().map(|item| self.item(item)).collect();
                all_of(parts)
            }
            CompiledDetection::AnyOf(parts) => {
                let parts = parts.iter().map(|part| self.detection(part)).collect();
                any_of(parts)
            }
            CompiledDetection::And(parts) => {
                let parts = parts.iter().map(|part| self.detection(part)).collect();
                all_of(parts)
            }
            CompiledDetection::Keywords(matcher) => self.matcher(matcher, None),
            CompiledDetection::ArrayMatch {
                field, quantifier, ..
            } => match quantifier {
                // Both need a member, so the array.
                ArrayQuantifier::Any | ArrayQuantifier::All => {
                    let field = self.field(field);
                    self.atom(AtomKey::Presence(field))
                }
                ArrayQuantifier::AllOrEmpty | ArrayQuantifier::None => Analysis::Open,
            },
            CompiledDetection::Conditional { .. } => Analysis::Open,
        }
    }

    fn item(&mut self, item: &CompiledDetectionItem) -> Analysis {
        let Some(name) = item.field.as_deref() else {
            return self.matcher(&item.matcher, None);
        };
        match item.exists {
            Some(false) => return Analysis::Open,
            Some(true) => {
                let field = self.field(name);
                return self.atom(AtomKey::Presence(field));
            }
            None => {}
        }
        // `null` is the one matcher an absent field satisfies.
        if matches!(item.matcher, CompiledMatcher::Null) {
            return Analysis::Open;
        }
        if let CompiledMatcher::FieldRef {
            field: other, op, ..
        } = &item.matcher
        {
            let substring = !matches!(op, IrStrOp::Exact);
            return self.atom(AtomKey::Reference(
                name.to_owned(),
                other.clone(),
                substring,
            ));
        }
        let field = self.field(name);
        match self.matcher(&item.matcher, Some(field)) {
            Analysis::Tree(node) => Analysis::Tree(node),
            Analysis::Open => self.atom(AtomKey::Presence(field)),
        }
    }

    /// A matcher's literals; `field` is `None` for keywords (any string of the record).
    fn matcher(&mut self, matcher: &CompiledMatcher, field: Option<u32>) -> Analysis {
        match matcher {
            CompiledMatcher::Exact {
                value,
                case_insensitive,
            } => match (fold(value, *case_insensitive), field) {
                (Some(value), Some(field)) => self.atom(AtomKey::Exact(field, value)),
                (Some(value), None) => self.keyword(value),
                (None, _) => Analysis::Open,
            },
            CompiledMatcher::Contains {
                value,
                case_insensitive,
            }
            | CompiledMatcher::StartsWith {
                value,
                case_insensitive,
            }
            | CompiledMatcher::EndsWith {
                value,
                case_insensitive,
            } => self.contains(value, *case_insensitive, field),
            CompiledMatcher::AhoCorasickSet {
                needles,
                case_insensitive,
                ..
            } => {
                let parts = needles
                    .iter()
                    .map(|needle| self.contains(needle, *case_insensitive, field))
                    .collect();
                any_of(parts)
            }
            CompiledMatcher::Regex(regex) => self.regex(regex.as_str(), field),
            CompiledMatcher::RegexSetMatch { set, mode } => {
                let parts = set
                    .patterns()
                    .iter()
                    .map(|pattern| self.regex(pattern, field))
                    .collect();
                combine(*mode, parts)
            }
            CompiledMatcher::AnyOf(children) => {
                let parts = children
                    .iter()
                    .map(|child| self.matcher(child, field))
                    .collect();
                any_of(parts)
            }
            CompiledMatcher::AllOf(children) => {
                let parts = children
                    .iter()
                    .map(|child| self.matcher(child, field))
                    .collect();
                all_of(parts)
            }
            CompiledMatcher::CaseInsensitiveGroup { children, mode } => {
                let parts = children
                    .iter()
                    .map(|child| self.matcher(child, field))
                    .collect();
                combine(*mode, parts)
            }
            CompiledMatcher::NumericEq(number) => match field {
                Some(field) if number.is_finite() => {
                    self.atom(AtomKey::Number(field, number.to_bits()))
                }
                _ => Analysis::Open,
            },
            CompiledMatcher::Cidr(_)
            | CompiledMatcher::NumericGt(_)
            | CompiledMatcher::NumericGte(_)
            | CompiledMatcher::NumericLt(_)
            | CompiledMatcher::NumericLte(_)
            | CompiledMatcher::Exists(_)
            | CompiledMatcher::FieldRef { .. }
            | CompiledMatcher::Null
            | CompiledMatcher::BoolEq(_)
            | CompiledMatcher::Expand { .. }
            | CompiledMatcher::TimestampPart { .. }
            | CompiledMatcher::Not(_) => Analysis::Open,
        }
    }

    fn contains(&mut self, value: &str, case_insensitive: bool, field: Option<u32>) -> Analysis {
        match (fold(value, case_insensitive), field) {
            (Some(needle), Some(field)) => self.atom(AtomKey::Contains(field, needle)),
            (Some(needle), None) => self.keyword(needle),
            (None, _) => Analysis::Open,
        }
    }

    /// A literal some string of the record contains; strings are scanned joined by
    /// [`SEPARATOR`], so a literal holding it cannot be told apart from a join.
    fn keyword(&mut self, needle: String) -> Analysis {
        if needle.contains(SEPARATOR) {
            return Analysis::Open;
        }
        self.atom(AtomKey::Keyword(needle))
    }

    fn regex(&mut self, pattern: &str, field: Option<u32>) -> Analysis {
        // The literals are folded already: `fold` keeps them as they are, or refuses those it
        // cannot compare.
        if let Some(literals) = regex_literals(pattern) {
            let parts = literals
                .into_iter()
                .map(|literal| self.contains(&literal, false, field))
                .collect();
            if let tree @ Analysis::Tree(_) = any_of(parts) {
                return tree;
            }
        }
        match (field, minimum_length(pattern)) {
            (Some(field), Some(length)) if length >= MIN_REGEX_LENGTH => {
                self.atom(AtomKey::MinLength(field, length))
            }
            _ => Analysis::Open,
        }
    }
}

/// A literal in the form atoms compare: rsigma's case-insensitive literals are already
/// lowercased; case-sensitive ones are usable only when every character outside ASCII is
/// [`caseless`].
fn fold(value: &str, case_insensitive: bool) -> Option<String> {
    if value.is_empty() {
        None
    } else if case_insensitive {
        // rsigma lowercased it; the gate's fold also maps `ſ` to `s` (see `fold_text`).
        Some(value.replace('\u{17f}', "s"))
    } else if value.chars().all(|c| c.is_ascii() || caseless(c)) {
        Some(value.to_ascii_lowercase())
    } else {
        None
    }
}

/// A character outside ASCII that folding leaves alone and that no case-insensitive match
/// equates with another: not alphabetic (which rules out every cased letter, the circled
/// letters and Roman numerals, and the final sigma `str::to_lowercase` makes of `Σ`), and its
/// own upper and lower case. Emoji, their variation selectors and keycaps, symbols, CJK
/// punctuation.
fn caseless(c: char) -> bool {
    !c.is_ascii()
        && !c.is_alphabetic()
        && c.to_lowercase().eq(std::iter::once(c))
        && c.to_uppercase().eq(std::iter::once(c))
}

/// A regex with no literal but a shortest match shorter than this falls back to its field's
/// presence.
const MIN_REGEX_LENGTH: usize = 2;

/// The fewest bytes a match of `pattern` spans.
fn minimum_length(pattern: &str) -> Option<usize> {
    regex_syntax::Parser::new()
        .parse(pattern)
        .ok()?
        .properties()
        .minimum_len()
}

/// How the gate folds text that is not ASCII: `str::to_lowercase` (what rsigma compares
/// case-insensitively), then `ſ` (U+017F) as `s`. `ſ` is its own lowercase, but a
/// case-insensitive regex takes it for `s`; with it mapped, every character a case-insensitive
/// regex or rsigma's lowercase comparison equates with an ASCII letter folds to that letter (the
/// Kelvin sign, the only other one, lowercases to `k`).
fn fold_text(text: &str) -> String {
    let lower = text.to_lowercase();
    // `replace` copies even when there is nothing to replace.
    if lower.contains('\u{17f}') {
        lower.replace('\u{17f}', "s")
    } else {
        lower
    }
}

/// [`fold_text`] of one character, when it is one character (not, for example, `İ`).
fn fold_char(c: char) -> Option<char> {
    let mut lower = c.to_lowercase();
    let first = lower.next()?;
    if lower.next().is_some() {
        return None;
    }
    Some(if first == '\u{17f}' { 's' } else { first })
}

/// Classes wider than this are left as they are: the literal extractor gives up on them anyway.
const MAX_FOLDED_CLASS: u32 = 64;

/// The pattern with every literal and small class folded character by character, so that a
/// match of `hir` in a text is, folded, a match of the result in the folded text.
fn fold_hir(hir: &regex_syntax::hir::Hir) -> Option<regex_syntax::hir::Hir> {
    use regex_syntax::hir::{Capture, Class, ClassUnicode, ClassUnicodeRange, Hir, HirKind};
    Some(match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => hir.clone(),
        HirKind::Literal(literal) => {
            let text = std::str::from_utf8(&literal.0).ok()?;
            let folded: Option<String> = text.chars().map(fold_char).collect();
            Hir::literal(folded?.into_bytes())
        }
        HirKind::Class(Class::Unicode(class)) => {
            if class_width(class) > MAX_FOLDED_CLASS {
                return Some(hir.clone());
            }
            let mut members = Vec::new();
            for range in class.ranges() {
                for c in range.start()..=range.end() {
                    let folded = fold_char(c)?;
                    members.push(ClassUnicodeRange::new(folded, folded));
                }
            }
            Hir::class(Class::Unicode(ClassUnicode::new(members)))
        }
        HirKind::Class(Class::Bytes(_)) => return None,
        HirKind::Repetition(repetition) => {
            let mut repetition = repetition.clone();
            repetition.sub = Box::new(fold_hir(&repetition.sub)?);
            Hir::repetition(repetition)
        }
        HirKind::Capture(capture) => Hir::capture(Capture {
            sub: Box::new(fold_hir(&capture.sub)?),
            ..capture.clone()
        }),
        HirKind::Concat(parts) => Hir::concat(parts.iter().map(fold_hir).collect::<Option<_>>()?),
        HirKind::Alternation(parts) => {
            Hir::alternation(parts.iter().map(fold_hir).collect::<Option<_>>()?)
        }
    })
}

/// Folded literals one of which every match of `pattern` starts with (or, failing that, ends
/// with), when there are finitely many, all ASCII and long enough to select something.
fn regex_literals(pattern: &str) -> Option<Vec<String>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let folded = fold_hir(&hir)?;
    let extracted = |kind: ExtractKind| -> Option<Vec<String>> {
        let sequence = Extractor::new().kind(kind).extract(&folded);
        sequence
            .literals()?
            .iter()
            .map(|literal| String::from_utf8(literal.as_bytes().to_vec()).ok())
            .collect()
    };
    [
        extracted(ExtractKind::Prefix),
        extracted(ExtractKind::Suffix),
        inner_literals(&folded),
    ]
    .into_iter()
    .flatten()
    .filter_map(usable)
    .max_by_key(|literals| shortest(literals))
}

/// Characters rare enough in logs to be a literal on their own.
const RARE_CHARACTERS: &str = "`^~|{}$#@<>![]";

/// A set of literals worth an atom: none empty, each either two bytes or more (any character
/// outside ASCII is) or one of [`RARE_CHARACTERS`], sorted.
fn usable(mut literals: Vec<String>) -> Option<Vec<String>> {
    let rare = |text: &str| {
        let mut chars = text.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => RARE_CHARACTERS.contains(c),
            _ => false,
        }
    };
    if literals.is_empty()
        || literals
            .iter()
            .any(|text| text.len() < MIN_REGEX_LITERAL && !rare(text))
    {
        return None;
    }
    literals.sort();
    literals.dedup();
    Some(literals)
}

fn shortest(literals: &[String]) -> usize {
    literals.iter().map(String::len).min().unwrap_or(0)
}

/// How many characters a class holds.
fn class_width(class: &regex_syntax::hir::ClassUnicode) -> u32 {
    class
        .ranges()
        .iter()
        .map(|range| u32::from(range.end()) - u32::from(range.start()) + 1)
        .sum()
}

/// Classes with more members than this give no literals inside a pattern.
const MAX_INNER_CLASS: u32 = 4;

/// Literals one of which every match of a folded pattern contains, anywhere in it: the best
/// usable part of a concatenation, every branch of an alternation, the body of a repetition
/// that must occur. Prefix and suffix extraction miss `\w+`x` (a literal between classes).
fn inner_literals(hir: &regex_syntax::hir::Hir) -> Option<Vec<String>> {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Literal(literal) => Some(vec![String::from_utf8(literal.0.to_vec()).ok()?]),
        HirKind::Class(Class::Unicode(class)) => {
            if class_width(class) > MAX_INNER_CLASS {
                return None;
            }
            Some(
                class
                    .ranges()
                    .iter()
                    .flat_map(|range| range.start()..=range.end())
                    .map(String::from)
                    .collect(),
            )
        }
        HirKind::Capture(capture) => inner_literals(&capture.sub),
        HirKind::Repetition(repetition) if repetition.min >= 1 => inner_literals(&repetition.sub),
        HirKind::Concat(parts) => parts
            .iter()
            .filter_map(|part| inner_literals(part).and_then(usable))
            .max_by_key(|literals| shortest(literals)),
        HirKind::Alternation(parts) => {
            let mut all = Vec::new();
            for part in parts {
                all.extend(inner_literals(part)?);
            }
            Some(all)
        }
        _ => None,
    }
}

fn combine(mode: GroupMode, parts: Vec<Analysis>) -> Analysis {
    match mode {
        GroupMode::Any => any_of(parts),
        GroupMode::All => all_of(parts),
    }
}

/// The detections a selector (`1 of selection_*`) names, in the order of their names.
fn named_detections<'r>(
    rule: &'r CompiledRule,
    pattern: &SelectorPattern,
) -> Vec<&'r CompiledDetection> {
    let mut named: Vec<(&String, &CompiledDetection)> = rule
        .detections
        .iter()
        .filter(|(name, _)| pattern.matches_detection_name(name))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    named.into_iter().map(|(_, detection)| detection).collect()
}

/// Every part is necessary: the open ones say nothing and are dropped.
fn all_of(parts: Vec<Analysis>) -> Analysis {
    let mut nodes: Vec<Node> = parts
        .into_iter()
        .filter_map(|part| match part {
            Analysis::Tree(node) => Some(node),
            Analysis::Open => None,
        })
        .collect();
    match nodes.len() {
        0 => Analysis::Open,
        1 => Analysis::Tree(nodes.remove(0)),
        _ => Analysis::Tree(Node::All(nodes.into_boxed_slice())),
    }
}

/// One part is enough: an open part opens the whole.
fn any_of(parts: Vec<Analysis>) -> Analysis {
    let mut nodes = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            Analysis::Tree(node) => nodes.push(node),
            Analysis::Open => return Analysis::Open,
        }
    }
    match nodes.len() {
        0 => Analysis::Open,
        1 => Analysis::Tree(nodes.remove(0)),
        _ => Analysis::Tree(Node::Any(nodes.into_boxed_slice())),
    }
}

/// Atoms one of which holds whenever `node` does: the rule is looked at only when one of them is
/// set. Of an `All`, the most selective child's.
fn anchors(node: &Node, atoms: &[AtomKey]) -> Vec<u32> {
    match node {
        Node::Atom(atom) => vec![*atom],
        Node::Any(children) => children
            .iter()
            .flat_map(|child| anchors(child, atoms))
            .collect(),
        Node::All(children) => children
            .iter()
            .map(|child| anchors(child, atoms))
            .min_by_key(|set| {
                let worst = set
                    .iter()
                    .filter_map(|&atom| atoms.get(atom as usize))
                    .map(AtomKey::rank)
                    .max()
                    .unwrap_or(u8::MAX);
                (worst, set.len())
            })
            .unwrap_or_default(),
    }
}

impl Gate {
    pub(crate) fn build(rules: &[CompiledRule]) -> Self {
        let mut builder = Builder::default();
        let trees: Vec<Option<Node>> = rules
            .iter()
            .map(|rule| match builder.rule(rule) {
                Analysis::Tree(node) => Some(node),
                Analysis::Open => None,
            })
            .collect();
        let vetoes: Box<[Option<proof::Proof>]> = rules.iter().map(proof::veto).collect();

        let mut anchored: Vec<Vec<u32>> = vec![Vec::new(); builder.atoms.len()];
        let mut open = Vec::new();
        for (index, tree) in trees.iter().enumerate() {
            let index = index as u32;
            match tree {
                None => open.push(index),
                Some(tree) => {
                    let mut atoms = anchors(tree, &builder.atoms);
                    atoms.sort_unstable();
                    atoms.dedup();
                    for atom in atoms {
                        if let Some(rules) = anchored.get_mut(atom as usize) {
                            rules.push(index);
                        }
                    }
                }
            }
        }

        let mut fields: Vec<FieldGate> = builder
            .field_names
            .iter()
            .map(|name| FieldGate {
                name: name.clone(),
                presence: None,
                exact: FxHashMap::default(),
                exact_lengths: ExactLengths::default(),
                contains: None,
                numbers: Vec::new(),
                lengths: Vec::new(),
            })
            .collect();
        let mut references = Vec::new();
        let mut needles: Vec<Vec<(String, u32)>> = vec![Vec::new(); fields.len()];
        let mut keywords = Vec::new();
        for (atom, key) in builder.atoms.iter().enumerate() {
            let atom = atom as u32;
            match key {
                AtomKey::Presence(field) => {
                    if let Some(gate) = fields.get_mut(*field as usize) {
                        gate.presence = Some(atom);
                    }
                }
                AtomKey::Exact(field, value) => {
                    if let Some(gate) = fields.get_mut(*field as usize) {
                        gate.exact.insert(value.clone(), atom);
                        gate.exact_lengths.insert(value.len());
                    }
                }
                AtomKey::Contains(field, needle) => {
                    if let Some(list) = needles.get_mut(*field as usize) {
                        list.push((needle.clone(), atom));
                    }
                }
                AtomKey::Number(field, bits) => {
                    if let Some(gate) = fields.get_mut(*field as usize) {
                        gate.numbers.push((f64::from_bits(*bits), atom));
                    }
                }
                AtomKey::MinLength(field, length) => {
                    if let Some(gate) = fields.get_mut(*field as usize) {
                        gate.lengths.push((*length, atom));
                    }
                }
                AtomKey::Keyword(needle) => keywords.push((needle.clone(), atom)),
                AtomKey::Reference(field, other, substring) => references.push(Reference {
                    field: field.clone(),
                    other: other.clone(),
                    substring: *substring,
                    atom,
                }),
            }
        }
        for gate in &mut fields {
            gate.numbers.sort_by(|a, b| a.0.total_cmp(&b.0));
            gate.lengths.sort_unstable();
        }
        let mut unbuilt = Vec::new();
        for (gate, list) in fields.iter_mut().zip(needles) {
            let atoms: Vec<u32> = list.iter().map(|(_, atom)| *atom).collect();
            gate.contains = Needles::build(list);
            if gate.contains.is_none() {
                unbuilt.extend(atoms);
            }
        }
        let keyword_atoms: Vec<u32> = keywords.iter().map(|(_, atom)| *atom).collect();
        let keywords = Needles::build(keywords);
        if keywords.is_none() {
            unbuilt.extend(keyword_atoms);
        }
        // An automaton that could not be built cannot mark its atoms: the rules needing them are
        // evaluated on every record.
        let mut trees = trees;
        if !unbuilt.is_empty() {
            for (index, tree) in trees.iter_mut().enumerate() {
                if tree
                    .as_ref()
                    .is_some_and(|tree| mentions_any(tree, &unbuilt))
                {
                    *tree = None;
                    open.push(index as u32);
                }
            }
            open.sort_unstable();
        }
        let mut by_key: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        let mut unkeyed = Vec::new();
        for (index, field) in fields.iter().enumerate() {
            let index = index as u32;
            if field.name.contains(['\\', '[']) {
                unkeyed.push(index);
                continue;
            }
            let mut keys = vec![field.name.as_str()];
            if let Some((first, _)) = field.name.split_once('.') {
                keys.push(first);
            }
            for key in keys {
                let list = by_key.entry(key.to_owned()).or_default();
                if !list.contains(&index) {
                    list.push(index);
                }
            }
        }
        Self {
            fields,
            by_key,
            unkeyed,
            keywords,
            anchored: anchored.into_iter().map(Vec::into_boxed_slice).collect(),
            open: open.into_boxed_slice(),
            trees: trees
                .iter()
                .map(|tree| tree.as_ref().map(Test::of))
                .collect(),
            vetoes,
            references: references.into_boxed_slice(),
            atoms: builder.atoms.len(),
        }
    }

    /// Rules evaluated on every record.
    #[cfg(test)]
    pub(crate) fn open_rules(&self) -> usize {
        self.open.len()
    }

    /// The indexes of the rules that may match `event`, ascending.
    pub(crate) fn select<E: Event>(&self, event: &E, record: &RecordScan) -> Vec<u32> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.select_with(event, &mut scratch, record),
            // Not reached (selection never nests); correct anyway.
            Err(_) => self.select_with(event, &mut Scratch::default(), record),
        })
    }

    fn select_with<E: Event>(
        &self,
        event: &E,
        scratch: &mut Scratch,
        record: &RecordScan,
    ) -> Vec<u32> {
        let Scratch {
            hits,
            probe,
            seen,
            text: folded,
            joined,
            joined_for,
        } = scratch;
        hits.reset(self.atoms);
        // The fields the record can have, by its keys (`Event::visit_top_level_keys` names every
        // key a lookup can resolve under); all of them when it cannot say.
        probe.clear();
        probe.resize(self.fields.len(), false);
        // A gate of a few fields looks each of them up: cheaper than visiting a record's keys.
        let keyed = self.fields.len() > PROBE_ALL_UP_TO
            && event.visit_top_level_keys(&mut |key| {
                for &field in self.by_key.get(key).map(Vec::as_slice).unwrap_or_default() {
                    if let Some(slot) = probe.get_mut(field as usize) {
                        *slot = true;
                    }
                }
            });
        for &field in &self.unkeyed {
            if let Some(slot) = probe.get_mut(field as usize) {
                *slot = true;
            }
        }
        for (field, _) in self
            .fields
            .iter()
            .zip(probe.iter())
            .filter(|(_, probed)| !keyed || **probed)
        {
            let Some(value) = event.get_field(&field.name) else {
                continue;
            };
            if let Some(atom) = field.presence {
                hits.set(atom);
            }
            if !field.numbers.is_empty() {
                project_number(&value, &mut |number| field.mark_number(number, hits));
            }
            if !field.lengths.is_empty() {
                project(&value, &mut |text| field.mark_length(text, hits));
            }
            if field.exact.is_empty() && field.contains.is_none() {
                continue;
            }
            project(&value, &mut |text| field.mark(text, folded, hits));
        }
        for reference in &self.references {
            if reference.holds(event) {
                hits.set(reference.atom);
            }
        }
        if let Some(keywords) = &self.keywords {
            // One scan over the strings joined by a byte no needle contains: a needle cannot
            // span two strings, and the automaton is entered once per record, not per string.
            // The strings are the record's whatever its logsource, so they are joined once for
            // every partition the record meets.
            if *joined_for != record.id {
                joined.clear();
                let cell = RefCell::new((&mut *joined, &mut *folded));
                event.any_string_value(&|text| {
                    let (joined, folded) = &mut *cell.borrow_mut();
                    joined.push_str(fold_value(text, false, folded));
                    joined.push(SEPARATOR);
                    false
                });
                // Teddy compares bytes; the automaton ignores ASCII case anyway.
                joined.make_ascii_lowercase();
                *joined_for = record.id;
            }
            keywords.mark(joined, hits);
        }

        seen.clear();
        seen.resize(self.trees.len(), false);
        let vetoed = |rule: u32| {
            self.vetoes
                .get(rule as usize)
                .and_then(Option::as_ref)
                .is_some_and(|veto| veto.holds(event))
        };
        let mut selected: Vec<u32> = self
            .open
            .iter()
            .copied()
            .filter(|&rule| !vetoed(rule))
            .collect();
        for &atom in &hits.set {
            let Some(rules) = self.anchored.get(atom as usize) else {
                continue;
            };
            for &rule in rules.iter() {
                let Some(slot) = seen.get_mut(rule as usize) else {
                    continue;
                };
                if *slot {
                    continue;
                }
                *slot = true;
                if self
                    .trees
                    .get(rule as usize)
                    .and_then(Option::as_ref)
                    .is_some_and(|tree| tree.holds(hits))
                    && !vetoed(rule)
                {
                    selected.push(rule);
                }
            }
        }
        selected.sort_unstable();
        selected
    }
}

impl FieldGate {
    /// rsigma's test, `(value - n).abs() < f64::EPSILON`, against the sorted values near it.
    fn mark_number(&self, value: f64, hits: &mut Hits) {
        if value.is_nan() {
            return;
        }
        let start = self
            .numbers
            .partition_point(|(number, _)| *number < value - f64::EPSILON);
        for &(number, atom) in self.numbers.get(start..).unwrap_or_default() {
            if number > value + f64::EPSILON {
                break;
            }
            if (value - number).abs() < f64::EPSILON {
                hits.set(atom);
            }
        }
    }

    /// rsigma runs a regex on the value or on its lowercase copy: lowercasing keeps ASCII's
    /// length and may change anything else's, which is then taken to be long enough.
    fn mark_length(&self, text: &str, hits: &mut Hits) {
        let length = if text.is_ascii() {
            text.len()
        } else {
            usize::MAX
        };
        for &(_, atom) in self
            .lengths
            .iter()
            .take_while(|(minimum, _)| *minimum <= length)
        {
            hits.set(atom);
        }
    }

    fn mark(&self, text: &str, scratch: &mut String, hits: &mut Hits) {
        let ascii = text.is_ascii();
        // Folding keeps ASCII's length; anything else is folded and looked up.
        let exact = !self.exact.is_empty() && (!ascii || self.exact_lengths.contains(text.len()));
        let lowercase = exact || self.contains.as_ref().is_some_and(Needles::wants_lowercase);
        let folded = if ascii {
            fold_ascii(text, lowercase, scratch)
        } else {
            fold_value(text, lowercase, scratch)
        };
        if exact && let Some(&atom) = self.exact.get(folded) {
            hits.set(atom);
        }
        if let Some(needles) = &self.contains {
            needles.mark(folded, hits);
        }
    }
}

impl Reference {
    /// Whether the reference may hold: both fields present and, for two strings, their folded
    /// texts equal (rsigma's equality, case-sensitive or not, implies that) or, for the
    /// substring forms on ASCII, one inside the other. Any other pair of values may hold.
    fn holds<E: Event>(&self, event: &E) -> bool {
        let (Some(value), Some(other)) =
            (event.get_field(&self.field), event.get_field(&self.other))
        else {
            return false;
        };
        let (EventValue::Str(value), EventValue::Str(other)) = (&value, &other) else {
            return true;
        };
        if value.is_ascii() && other.is_ascii() {
            let (value, other) = (value.as_bytes(), other.as_bytes());
            return if self.substring {
                other.is_empty()
                    || value
                        .windows(other.len())
                        .any(|part| part.eq_ignore_ascii_case(other))
            } else {
                value.eq_ignore_ascii_case(other)
            };
        }
        // `str::to_lowercase` is not a function of each character (a final sigma), so a
        // substring outside ASCII may fold to a non-substring: it may hold.
        self.substring || fold_text(value) == fold_text(other)
    }
}

/// A set of lengths: a bit each below 1,024 bytes, one flag for every length above.
#[derive(Default)]
struct ExactLengths {
    short: [u64; 16],
    long: bool,
}

impl ExactLengths {
    fn insert(&mut self, length: usize) {
        match self.short.get_mut(length / 64) {
            Some(word) => *word |= 1 << (length % 64),
            None => self.long = true,
        }
    }

    fn contains(&self, length: usize) -> bool {
        match self.short.get(length / 64) {
            Some(word) => word & (1 << (length % 64)) != 0,
            None => self.long,
        }
    }
}

/// A value folded as rsigma folds it before a case-insensitive comparison (`str::to_lowercase`),
/// in `scratch` when it changes. ASCII is lowercased only for exact lookups (`lowercase_ascii`):
/// the automata ignore ASCII case.
fn fold_value<'a>(text: &'a str, lowercase_ascii: bool, scratch: &'a mut String) -> &'a str {
    if text.is_ascii() {
        return fold_ascii(text, lowercase_ascii, scratch);
    }
    // Text outside ASCII mostly has no letter there that folds (`®` in the product names of
    // Sysmon's process events): folded, it is its ASCII lowercased, and the scratch buffer's
    // room is reused instead of a new string allocated.
    if text
        .chars()
        .all(|c| c.is_ascii() || fold_char(c) == Some(c))
    {
        scratch.clear();
        scratch.push_str(text);
        scratch.make_ascii_lowercase();
        return scratch;
    }
    *scratch = fold_text(text);
    scratch
}

/// [`fold_value`] of a text the caller knows to be ASCII.
fn fold_ascii<'a>(text: &'a str, lowercase: bool, scratch: &'a mut String) -> &'a str {
    if !lowercase || !text.bytes().any(|byte| byte.is_ascii_uppercase()) {
        return text;
    }
    scratch.clear();
    scratch.push_str(text);
    scratch.make_ascii_lowercase();
    scratch
}

/// The texts rsigma's string matchers compare for a value: strings as they are, numbers and
/// booleans by their text, arrays member by member.
fn project(value: &EventValue<'_>, visit: &mut dyn FnMut(&str)) {
    match value {
        EventValue::Str(text) => visit(text),
        EventValue::Int(number) => visit(&number.to_string()),
        EventValue::Float(number) => visit(&number.to_string()),
        EventValue::Bool(flag) => visit(if *flag { "true" } else { "false" }),
        EventValue::Array(members) => {
            for member in members {
                project(member, visit);
            }
        }
        EventValue::Null | EventValue::Map(_) => {}
    }
}

/// The numbers rsigma's numeric matchers compare for a value: integers and floats, strings that
/// parse as `f64`, arrays member by member.
fn project_number(value: &EventValue<'_>, visit: &mut dyn FnMut(f64)) {
    match value {
        EventValue::Int(number) => visit(*number as f64),
        EventValue::Float(number) => visit(*number),
        EventValue::Str(text) => {
            if let Ok(number) = text.parse::<f64>() {
                visit(number);
            }
        }
        EventValue::Array(members) => {
            for member in members {
                project_number(member, visit);
            }
        }
        EventValue::Bool(_) | EventValue::Null | EventValue::Map(_) => {}
    }
}

fn mentions_any(node: &Node, atoms: &[u32]) -> bool {
    match node {
        Node::Atom(atom) => atoms.contains(atom),
        Node::All(children) | Node::Any(children) => {
            children.iter().any(|child| mentions_any(child, atoms))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::Strategy;
    use proptest::prelude::prop;
    use proptest::prop_oneof;
    use proptest::strategy::Just;
    use rsigma_eval::JsonEvent;
    use serde_json::json;

    fn gate(yaml: &str) -> (Gate, Vec<CompiledRule>) {
        let collection = rsigma_parser::parse_sigma_yaml(yaml).unwrap();
        let rules: Vec<CompiledRule> = collection
            .rules
            .iter()
            .map(|rule| rsigma_eval::compile_rule(rule).unwrap())
            .collect();
        (Gate::build(&rules), rules)
    }

    fn selected(gate: &Gate, event: serde_json::Value) -> Vec<u32> {
        gate.select(&JsonEvent::borrow(&event), &RecordScan::new())
    }

    /// The atoms `needles` marks in `text`, ascending.
    fn marked_atoms(needles: &Needles, text: &str, atoms: usize) -> Vec<u32> {
        let mut hits = Hits::default();
        hits.reset(atoms);
        needles.mark(text, &mut hits);
        let mut set = hits.set.clone();
        set.sort_unstable();
        set
    }

    /// The gate never drops a rule rsigma would match.
    fn assert_sound(gate: &Gate, rules: &[CompiledRule], event: serde_json::Value) {
        let view = JsonEvent::borrow(&event);
        let chosen = gate.select(&view, &RecordScan::new());
        for (index, rule) in rules.iter().enumerate() {
            if rsigma_eval::evaluate_rule(rule, &view).is_some() {
                assert!(
                    chosen.contains(&(index as u32)),
                    "{} matches {event} but the gate dropped it",
                    rule.title
                );
            }
        }
    }

    fn base64_text(text: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    /// Whether the gate selects no rule for `event`, having checked that it keeps every rule
    /// rsigma matches.
    fn vetoed(gate: &Gate, rules: &[CompiledRule], event: serde_json::Value) -> bool {
        assert_sound(gate, rules, event.clone());
        selected(gate, event).is_empty()
    }

    const EXTENSION: &str = r#"
title: Not an executable
logsource: {category: process_creation, product: windows}
detection:
    known:
        Image|endswith: ['.exe', '.com']
    filter_main_system:
        Image: System
    filter_optional_temp:
        - ParentImage|contains: ':\Windows\Temp\'
        - Image|startswith: 'C:\Temp\'
    filter_optional_regex:
        Image|re: 'x.z'
    condition: not known and not 1 of filter_main_* and not 1 of filter_optional_*
"#;

    #[test]
    fn vetoes_drop_rules_their_filters_prove_false() {
        let (gate, rules) = gate(EXTENSION);
        assert_eq!(gate.open_rules(), 1);
        // Proven: a suffix, an equality, one branch of a list of maps, a prefix.
        assert!(vetoed(
            &gate,
            &rules,
            json!({"Image": r"C:\Windows\cmd.EXE"})
        ));
        assert!(vetoed(&gate, &rules, json!({"Image": "SYSTEM"})));
        assert!(vetoed(
            &gate,
            &rules,
            json!({"Image": "a.dat", "ParentImage": r"c:\windows\temp\p.exe"})
        ));
        assert!(vetoed(&gate, &rules, json!({"Image": r"c:\temp\a.dat"})));
        // Not proven: rsigma decides.
        for record in [
            json!({"Image": r"C:\Windows\a.dat"}),
            json!({"Other": "x.exe"}),
            json!({"Image": null}),
            // The regex filter proves nothing.
            json!({"Image": "xyz"}),
            // Outside ASCII, an array, a number: the gate proves nothing from them.
            json!({"Image": r"C:\Jérôme\a.exe"}),
            json!({"Image": ["a.exe", "b.dat"]}),
            json!({"Image": 7}),
            json!({"Image": "a.dat", "ParentImage": ["c:\\windows\\temp\\"]}),
        ] {
            assert!(!vetoed(&gate, &rules, record.clone()), "{record}");
        }
    }

    #[test]
    fn vetoes_of_selected_rules_and_conditions_that_prove_nothing() {
        let (gate, rules) = gate(
            r#"
title: Renamed
logsource: {category: process_creation, product: windows}
detection:
    selection:
        OriginalFileName: 'reg.exe'
    filter:
        Image|endswith: '\reg.exe'
        User|contains|all: ['NT ', 'SYSTEM']
    condition: selection and not filter
---
title: Double negation
logsource: {category: process_creation, product: windows}
detection:
    selection:
        OriginalFileName: 'reg.exe'
    filter:
        Image|endswith: '\reg.exe'
    condition: selection and not (not filter)
---
title: Cased
logsource: {category: process_creation, product: windows}
detection:
    selection:
        OriginalFileName: 'reg.exe'
    filter:
        Image|endswith|cased: '\reg.exe'
    condition: selection and not filter
"#,
        );
        let renamed = json!({"OriginalFileName": "REG.EXE", "Image": r"C:\x\svc.exe"});
        assert_eq!(selected(&gate, renamed), vec![0, 1, 2]);
        // Every item of the filter proven: the first rule is dropped; a `not` inside a `not`
        // and a case-sensitive literal prove nothing.
        let system = json!({
            "OriginalFileName": "REG.EXE", "Image": r"C:\x\REG.exe", "User": "NT AUTHORITY\\SYSTEM"
        });
        assert_sound(&gate, &rules, system.clone());
        assert_eq!(selected(&gate, system), vec![1, 2]);
        // One item of the filter unproven: nothing dropped.
        let user = json!({"OriginalFileName": "REG.EXE", "Image": r"C:\x\reg.exe", "User": "bob"});
        assert_eq!(selected(&gate, user), vec![0, 1, 2]);
    }

    #[test]
    fn field_references_need_both_fields_and_equal_texts() {
        let (gate, rules) = gate(
            r#"
title: Runs itself
logsource: {category: process_creation, product: windows}
detection:
    selection:
        Image|fieldref: ParentImage
    condition: selection
---
title: Named in its parent
logsource: {category: process_creation, product: windows}
detection:
    selection:
        ParentCommandLine|fieldref|contains: Image
    condition: selection
"#,
        );
        assert_eq!(gate.open_rules(), 0);
        let cases = [
            (json!({"Image": "a.exe", "ParentImage": "b.exe"}), vec![]),
            (json!({"Image": "a.exe"}), vec![]),
            (json!({"Image": "A.exe", "ParentImage": "a.EXE"}), vec![0]),
            (json!({"Image": "Σ", "ParentImage": "σ"}), vec![0]),
            (json!({"Image": 1, "ParentImage": "1"}), vec![0]),
            (
                json!({"Image": "b.exe", "ParentCommandLine": "run B.EXE now"}),
                vec![1],
            ),
            (json!({"Image": "é", "ParentCommandLine": "x"}), vec![1]),
        ];
        for (record, expected) in cases {
            assert_sound(&gate, &rules, record.clone());
            assert_eq!(selected(&gate, record.clone()), expected, "{record}");
        }
    }

    const POWERSHELL: &str = r#"
title: Encoded PowerShell
logsource: {category: process_creation, product: windows}
detection:
    selection:
        Image|endswith: '\powershell.exe'
        CommandLine|contains: ' -enc '
    filter:
        User: SYSTEM
    condition: selection and not filter
"#;

    #[test]
    fn every_part_of_an_and_must_hold() {
        let (gate, rules) = gate(POWERSHELL);
        assert_eq!(gate.open_rules(), 0);
        let plain =
            json!({"Image": r"C:\Windows\powershell.exe", "CommandLine": "powershell -nop"});
        assert!(selected(&gate, plain.clone()).is_empty());
        let encoded =
            json!({"Image": r"C:\Windows\POWERSHELL.EXE", "CommandLine": "powershell -ENC abc"});
        assert_eq!(selected(&gate, encoded.clone()), vec![0]);
        assert_sound(&gate, &rules, plain);
        assert_sound(&gate, &rules, encoded);
    }

    #[test]
    fn negation_alone_is_open() {
        let (gate, _) = gate(
            r#"
title: Not SYSTEM
logsource: {product: windows}
detection:
    filter:
        User: SYSTEM
    condition: not filter
"#,
        );
        assert_eq!(gate.open_rules(), 1);
        assert_eq!(selected(&gate, json!({"Other": 1})), vec![0]);
    }

    #[test]
    fn or_needs_one_branch_and_selectors_follow_their_quantifier() {
        let (gate, rules) = gate(
            r#"
title: Either
logsource: {product: windows}
detection:
    selection_a:
        CommandLine|contains|all: [alpha, beta]
    selection_b:
        ParentImage|endswith: '\winword.exe'
    condition: 1 of selection_*
---
title: Both
logsource: {product: windows}
detection:
    selection_a:
        CommandLine|contains: alpha
    selection_b:
        ParentImage|endswith: '\winword.exe'
    condition: all of selection_*
"#,
        );
        assert_eq!(gate.open_rules(), 0);
        assert!(selected(&gate, json!({"CommandLine": "alpha"})).is_empty());
        assert_eq!(
            selected(&gate, json!({"CommandLine": "alpha beta"})),
            vec![0]
        );
        assert_eq!(
            selected(
                &gate,
                json!({"CommandLine": "alpha", "ParentImage": r"C:\WINWORD.EXE"})
            ),
            vec![0, 1]
        );
        for event in [
            json!({"CommandLine": "xx ALPHA BETA"}),
            json!({"CommandLine": "alpha", "ParentImage": r"c:\office\winword.exe"}),
        ] {
            assert_sound(&gate, &rules, event);
        }
    }

    proptest::proptest! {
        /// Text outside ASCII folds exactly as `fold_text`, through either path of
        /// `fold_value` (the scratch buffer reused, or a new string).
        #[test]
        fn text_outside_ascii_folds_as_fold_text(
            text in "[a-zA-Z ®©ſΣσςİıÄäK😀😃\\\\]{0,24}",
            lowercase in proptest::prelude::any::<bool>(),
        ) {
            proptest::prop_assume!(!text.is_ascii());
            let mut scratch = String::from("left over");
            proptest::prop_assert_eq!(fold_value(&text, lowercase, &mut scratch), fold_text(&text));
        }
    }

    #[test]
    fn folding_text_outside_ascii_keeps_what_str_to_lowercase_does() {
        let mut scratch = String::new();
        for text in [
            "Microsoft® Windows® Operating System",
            "ΟΔΟΣ",
            "ſystem",
            "İstanbul",
            "\u{212a}elvin",
            "😀 PowerShell",
        ] {
            assert_eq!(
                fold_value(text, false, &mut scratch),
                fold_text(text),
                "{text}"
            );
        }
        assert_eq!(
            fold_value("Microsoft® Windows®", true, &mut scratch),
            "microsoft® windows®"
        );
    }

    #[test]
    fn values_fold_as_rsigma_folds_them() {
        let (gate, rules) = gate(
            r#"
title: Unicode
logsource: {product: windows}
detection:
    selection:
        - CommandLine|contains: 'ÄRGER'
        - TargetFilename: 'C:\Temp\Ärger.txt'
        - Image|contains|cased: 'Temp'
        - User: 'Kelvin'
    condition: selection
---
title: Numbers
logsource: {product: windows}
detection:
    selection:
        EventID: 4688
        Status: '0x1'
        Flag: 'true'
    condition: selection
---
title: Regex
logsource: {product: windows}
detection:
    selection:
        CommandLine|re: 'mimi(katz|dogz)'
        User|re|i: 'adm[i1]n'
    condition: selection
"#,
        );
        for event in [
            json!({"CommandLine": "echo ärger"}),
            json!({"CommandLine": "ECHO ÄRGER"}),
            json!({"TargetFilename": r"c:\temp\ärger.TXT"}),
            json!({"Image": r"C:\Temp\x.exe"}),
            json!({"Image": r"C:\temp\x.exe"}),
            json!({"EventID": 4688, "Status": "0X1", "Flag": true}),
            json!({"EventID": "4688", "Status": "0x1", "Flag": "true"}),
            json!({"CommandLine": "MIMIKATZ mimidogz", "User": "ADM1N"}),
            json!({"CommandLine": "mimikatz", "User": "ſadmin"}),
            json!({"CommandLine": "MIMI\u{212a}ATZ", "User": "ADMIN"}),
            // Eight bytes that fold to the six of `kelvin` (the Kelvin sign).
            json!({"User": "\u{212a}ELVIN"}),
        ] {
            assert_sound(&gate, &rules, event);
        }
        assert!(selected(&gate, json!({"CommandLine": "calc"})).is_empty());
    }

    #[test]
    fn numbers_compare_as_rsigma_compares_them() {
        let (gate, rules) = gate(
            r#"
title: Sysmon config change
logsource: {product: windows, service: sysmon}
detection:
    selection:
        EventID: 16
    condition: selection
---
title: Many
logsource: {product: windows, service: sysmon}
detection:
    selection:
        EventID: [1, 2.5, 4688]
        Other|contains: 'x'
    condition: selection
"#,
        );
        assert_eq!(gate.open_rules(), 0);
        assert!(selected(&gate, json!({"EventID": 1})).is_empty());
        assert_eq!(selected(&gate, json!({"EventID": "16"})), vec![0]);
        for event in [
            json!({"EventID": 16}),
            json!({"EventID": 16.0}),
            json!({"EventID": "16"}),
            json!({"EventID": [3, "16"]}),
            json!({"EventID": " 16"}),
            json!({"EventID": "0x10"}),
            json!({"EventID": 2.5, "Other": "X"}),
            json!({"EventID": "4688", "Other": "ax"}),
            json!({"EventID": 1.0000000000000002, "Other": "x"}),
            json!({"EventID": "NaN", "Other": "x"}),
        ] {
            assert_sound(&gate, &rules, event);
        }
    }

    #[test]
    fn a_records_joined_strings_serve_only_that_record() {
        let (gate, _) = gate(
            r#"
title: Keywords
logsource: {product: linux, service: auth}
detection:
    keywords:
        - 'Failed password'
    condition: keywords
"#,
        );
        let hit = json!({"message": "Failed password for root"});
        let miss = json!({"message": "Accepted password for root"});
        let first = RecordScan::new();
        assert_eq!(gate.select(&JsonEvent::borrow(&hit), &first), vec![0]);
        assert!(
            gate.select(&JsonEvent::borrow(&miss), &RecordScan::new())
                .is_empty()
        );
        // The first record again, after another filled the thread's buffers.
        assert_eq!(gate.select(&JsonEvent::borrow(&hit), &first), vec![0]);
    }

    #[test]
    fn keywords_are_searched_in_every_string() {
        let (gate, rules) = gate(
            r#"
title: Keywords
logsource: {product: linux, service: auth}
detection:
    keywords:
        - 'Failed password'
        - 'authentication failure'
    condition: keywords
"#,
        );
        assert_eq!(gate.open_rules(), 0);
        assert!(selected(&gate, json!({"message": "Accepted password"})).is_empty());
        let failed = json!({"message": "sshd: FAILED PASSWORD for root"});
        assert_eq!(selected(&gate, failed.clone()), vec![0]);
        assert_sound(&gate, &rules, failed);
    }

    #[test]
    fn regex_literals_are_prefixes_of_every_match() {
        assert_eq!(
            regex_literals("mimi(katz|dogz)"),
            Some(vec!["mimidogz".to_owned(), "mimikatz".to_owned()])
        );
        // Case-insensitive: `k` also matches the Kelvin sign and `s` matches `ſ`, both of which
        // fold to the ASCII letter.
        assert_eq!(
            regex_literals("(?i)kerberos"),
            Some(vec!["kerberos".to_owned()])
        );
        // What rsigma makes of a wildcard value: the literal before the first wildcard.
        assert_eq!(
            regex_literals(r"(?i)^net use \\\\.*\\c\$ .*$"),
            Some(vec![r"net use \\".to_owned()])
        );
        // No literal at the start, one at the end.
        assert_eq!(regex_literals(r"\d+\.exe$"), Some(vec![".exe".to_owned()]));
        // A class that folds to several characters (`İ` lowercases to two).
        assert_eq!(regex_literals("(?i)[İx]yz"), None);
        assert_eq!(regex_literals(".*"), None);
        assert_eq!(regex_literals("a|b"), None);
        // A literal between classes, found by neither end.
        assert_eq!(
            regex_literals(r"\d+ -enc [a-z]+"),
            Some(vec![" -enc ".to_owned()])
        );
        // One character is enough when it is rare (PowerShell's escape character).
        assert_eq!(
            regex_literals(r"\w+`(?:\w+|-|.)`[\w+|\s]"),
            Some(vec!["`".to_owned()])
        );
        assert_eq!(regex_literals(r"\w+-\w+"), None);
        // Literals outside ASCII (an emoji keycap: `*` is Sigma's wildcard).
        assert_eq!(
            regex_literals("(?i).*\u{fe0f}\u{20e3}"),
            Some(vec!["\u{fe0f}\u{20e3}".to_owned()])
        );
        // Nothing but classes.
        assert_eq!(regex_literals(r"\s[a-fA-F0-9]{64}\s[a-fA-F0-9]{16}"), None);
        // A branch without a literal opens the alternation.
        assert_eq!(regex_literals(r"x(?:abc|\d+)y"), None);
        assert_eq!(regex_literals("(unclosed"), None);
    }

    #[test]
    fn literals_outside_ascii_and_regex_lengths_narrow_rules() {
        // An emoji keycap after a wildcard (rsigma's regex `.*\u{fe0f}\u{20e3}`), and a regex
        // of classes only (SNAKE's installer arguments, 82 bytes at least).
        let (narrowing, rules) = gate(
            r"
title: keycap
logsource: {category: process_creation}
detection:
  selection:
    CommandLine|contains: ['🦆', '*️⃣']
  condition: selection
---
title: hex arguments
logsource: {category: process_creation}
detection:
  selection:
    CommandLine|re: '\s[a-fA-F0-9]{64}\s[a-fA-F0-9]{16}'
  condition: selection
",
        );
        assert!(selected(&narrowing, json!({"CommandLine": "cmd.exe /c whoami"})).is_empty());
        let hex = format!("jpsetup.exe {} {}", "a".repeat(64), "B".repeat(16));
        for (command, expected) in [
            // Outside ASCII, the length of rsigma's lowercase copy is not known: the hex rule
            // is kept too.
            ("echo 7\u{fe0f}\u{20e3}", vec![0, 1]),
            ("echo 🦆", vec![0, 1]),
            ("é", vec![1]),
            ("echo 7", vec![]),
            (hex.as_str(), vec![1]),
        ] {
            assert_eq!(
                selected(&narrowing, json!({"CommandLine": command})),
                expected
            );
            assert_sound(&narrowing, &rules, json!({"CommandLine": command}));
        }
        // A cased letter outside ASCII is not compared: `Σ` lowercases to `ς` at the end of a
        // word, which a case-insensitive `σ` matches.
        let (sigma, rules) = gate(
            r"
title: sigma
logsource: {category: process_creation}
detection:
  selection:
    CommandLine|re|i: 'σ'
  condition: selection
",
        );
        assert_eq!(selected(&sigma, json!({"CommandLine": "ΑΣ"})), vec![0]);
        assert_sound(&sigma, &rules, json!({"CommandLine": "ΑΣ"}));
    }

    /// A small regex with a way to write a text it matches.
    #[derive(Debug, Clone)]
    enum Piece {
        Literal(String),
        Class(Vec<char>),
        Word,
        Digit,
        AnyChar,
        Plus(Box<Piece>),
        Star(Box<Piece>),
        Optional(Box<Piece>),
        Either(Vec<Piece>),
        Sequence(Vec<Piece>),
    }

    impl Piece {
        fn pattern(&self) -> String {
            let group = |piece: &Piece| format!("(?:{})", piece.pattern());
            match self {
                Piece::Literal(text) => regex_syntax::escape(text),
                Piece::Class(members) => {
                    let members: String = members
                        .iter()
                        .map(|c| regex_syntax::escape(&c.to_string()))
                        .collect();
                    format!("[{members}]")
                }
                Piece::Word => r"\w".to_owned(),
                Piece::Digit => r"\d".to_owned(),
                Piece::AnyChar => ".".to_owned(),
                Piece::Plus(inner) => format!("{}+", group(inner)),
                Piece::Star(inner) => format!("{}*", group(inner)),
                Piece::Optional(inner) => format!("{}?", group(inner)),
                Piece::Either(branches) => {
                    let branches: Vec<String> = branches.iter().map(group).collect();
                    format!("(?:{})", branches.join("|"))
                }
                Piece::Sequence(parts) => parts.iter().map(group).collect(),
            }
        }

        /// Appends a text the piece matches, steered by `choices`.
        fn write(&self, choices: &mut impl Iterator<Item = usize>, out: &mut String) {
            let mut pick = |n: usize| choices.next().unwrap_or(0) % n.max(1);
            match self {
                Piece::Literal(text) => out.push_str(text),
                Piece::Class(members) => out.push(members[pick(members.len())]),
                Piece::Word => out.push(['a', 'Z', '_', '9', 'é'][pick(5)]),
                Piece::Digit => out.push(['0', '7'][pick(2)]),
                Piece::AnyChar => out.push(['x', '`', 'é', ' '][pick(4)]),
                Piece::Plus(inner) => {
                    for _ in 0..=pick(2) {
                        inner.write(choices, out);
                    }
                }
                Piece::Star(inner) => {
                    for _ in 0..pick(3) {
                        inner.write(choices, out);
                    }
                }
                Piece::Optional(inner) => {
                    if pick(2) == 1 {
                        inner.write(choices, out);
                    }
                }
                Piece::Either(branches) => branches[pick(branches.len())].write(choices, out),
                Piece::Sequence(parts) => {
                    for part in parts {
                        part.write(choices, out);
                    }
                }
            }
        }
    }

    fn piece() -> impl Strategy<Value = Piece> {
        // Letters with case partners outside ASCII (ſ, the Kelvin sign), rare and common
        // punctuation, a character that lowercases to two (İ).
        pieces(vec![
            'a', 'b', 'k', 's', 'K', 'S', 'ſ', '\u{212a}', 'é', 'É', 'İ', '`', '{', '$', '-', '.',
            ' ', '\\', '*', '\u{fe0f}',
        ])
    }

    fn pieces(alphabet: Vec<char>) -> impl Strategy<Value = Piece> {
        let alphabet = prop::sample::select(alphabet);
        let leaf = prop_oneof![
            prop::collection::vec(alphabet.clone(), 1..5)
                .prop_map(|chars| Piece::Literal(chars.into_iter().collect())),
            prop::collection::vec(alphabet, 1..4).prop_map(Piece::Class),
            Just(Piece::Word),
            Just(Piece::Digit),
            Just(Piece::AnyChar),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|p| Piece::Plus(Box::new(p))),
                inner.clone().prop_map(|p| Piece::Star(Box::new(p))),
                inner.clone().prop_map(|p| Piece::Optional(Box::new(p))),
                prop::collection::vec(inner.clone(), 1..4).prop_map(Piece::Either),
                prop::collection::vec(inner, 1..5).prop_map(Piece::Sequence),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048, ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a regex matches holds one of its literals, folded as the gate folds values:
        /// the gate never drops a rule whose regex matches.
        #[test]
        fn regex_literals_are_in_every_match(
            piece in piece(),
            case_insensitive in proptest::prelude::any::<bool>(),
            choices in proptest::collection::vec(0usize..1000, 64),
            flips in proptest::collection::vec(proptest::prelude::any::<bool>(), 64),
        ) {
            let pattern = format!("{}{}", if case_insensitive { "(?i)" } else { "" }, piece.pattern());
            let mut text = String::new();
            piece.write(&mut choices.into_iter(), &mut text);
            if case_insensitive {
                // Another spelling the pattern matches: ASCII letters flipped.
                text = text
                    .chars()
                    .zip(flips.iter().cycle())
                    .map(|(c, flip)| if *flip { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                    .collect();
            }
            let regex = regex::Regex::new(&pattern).unwrap();
            proptest::prop_assume!(regex.is_match(&text));
            if let Some(literals) = regex_literals(&pattern) {
                let mut scratch = String::new();
                let folded = fold_value(&text, true, &mut scratch);
                proptest::prop_assert!(
                    literals.iter().any(|literal| folded.contains(literal.as_str())),
                    "{pattern:?} matches {text:?} but none of {literals:?} is in {folded:?}"
                );
            }
        }

        /// The same end to end, through rsigma: a rule whose regex matches a record is always
        /// selected. Greek sigmas (`Σ` lowercases to `ς` at the end of a word and to `σ`
        /// elsewhere), the micro sign (a case-insensitive `µ` matches `Μ`), emoji and keycaps
        /// test which literals outside ASCII the gate may compare.
        #[test]
        fn regex_rules_are_selected_whenever_they_match(
            piece in pieces(vec![
                'a', 'K', 's', 'ſ', '\u{212a}', 'é', 'İ', 'Σ', 'σ', 'ς', 'µ', 'Μ', 'μ', '🦆',
                '\u{fe0f}', '\u{20e3}', '`', '-', ' ', '\\',
            ]),
            case_insensitive in proptest::prelude::any::<bool>(),
            choices in proptest::collection::vec(0usize..1000, 64),
            suffix in prop::sample::select(vec!["", " ", "x", "Σ", "é"]),
        ) {
            let modifier = if case_insensitive { "|re|i" } else { "|re" };
            let yaml = format!(
                "title: t\nlogsource: {{category: test}}\ndetection:\n  selection:\n    \
                 CommandLine{modifier}: '{}'\n  condition: selection\n",
                piece.pattern()
            );
            let mut text = String::new();
            piece.write(&mut choices.into_iter(), &mut text);
            text.push_str(suffix);
            let (gate, rules) = gate(&yaml);
            assert_sound(&gate, &rules, json!({"CommandLine": text}));
        }

        /// Grams mark exactly the needles the automaton finds ignoring ASCII case: needles of
        /// every width (one byte to past a gram), sharing grams, nested, overlapping, found at
        /// the text's edges, with bytes `| 0x20` confuses (`@` and `` ` ``, `\r` and `-`).
        #[test]
        fn grams_mark_what_the_automaton_marks(
            needles in proptest::collection::vec("[abAB@`\\r\\-é ſ\u{212A}]{1,7}", 1..120),
            text in "[abAB@`\\r\\-é ſ\u{212A}.]{0,200}",
        ) {
            let atoms: Vec<u32> = (0..needles.len() as u32).collect();
            let grams = Needles {
                scan: Scan::Grams(Box::new(Grams::build(&needles, &atoms).unwrap())),
                atoms: atoms.clone().into_boxed_slice(),
            };
            let automaton = Needles::automaton(&needles, atoms.clone()).unwrap();
            let marked = |needles: &Needles, text: &str| marked_atoms(needles, text, atoms.len());
            let text = if grams.wants_lowercase() { text.to_ascii_lowercase() } else { text };
            proptest::prop_assert_eq!(marked(&grams, &text), marked(&automaton, &text));
        }

        /// One needle is found exactly where the automaton finds it ignoring ASCII case.
        #[test]
        fn one_needle_marks_what_the_automaton_marks(
            needle in "[abAB@`\\r\\-é ſ\u{212A}]{1,6}",
            text in "[abAB@`\\r\\-é ſ\u{212A}.]{0,200}",
        ) {
            let needles = vec![needle];
            let one = Needles::build_scanned(vec![(needles[0].clone(), 0)]).unwrap();
            proptest::prop_assert!(matches!(one.scan, Scan::One(_)));
            let automaton = Needles::automaton(&needles, vec![0]).unwrap();
            proptest::prop_assert_eq!(marked_atoms(&one, &text, 1), marked_atoms(&automaton, &text, 1));
        }

        /// A rule's veto never drops it where rsigma matches: filters of every modifier and
        /// case, under `not` at several depths, on values in and outside ASCII, arrays,
        /// numbers, `null` and absent fields.
        #[test]
        fn vetoes_never_drop_a_match(
            filters in proptest::collection::vec(
                (
                    prop::sample::select(vec!["A", "B"]),
                    prop::sample::select(vec![
                        "", "|contains", "|startswith", "|endswith", "|contains|cased",
                        "|endswith|cased", "|contains|all", "|re", "|re|i", "|contains|windash",
                        "|base64offset|contains", "|neq",
                    ]),
                    // Mostly a few values (a record escapes every filter only then), sometimes
                    // eight or more: rsigma makes those `contains` one Aho-Corasick set.
                    prop_oneof![
                        3 => proptest::collection::vec("[aAbéſK\\.]{1,2}", 1..3),
                        1 => proptest::collection::vec("[aAbéſK\\.]{1,2}", 8..10),
                    ],
                ),
                1..3,
            ),
            shape in 0usize..8,
            a in prop_oneof![
                8 => "[aAbéÉſK\\.-]{0,5}".prop_map(serde_json::Value::from),
                1 => "[aAbéÉſK\\.-]{0,5}".prop_map(|text| {
                    // `|base64offset` literals are base64 of the rule's text.
                    serde_json::Value::from(base64_text(&text))
                }),
                1 => Just(serde_json::Value::Null),
                1 => Just(json!(7)),
                1 => Just(json!(true)),
                1 => Just(json!(1.5)),
                1 => proptest::collection::vec("[aAbé.]{0,4}", 0..3).prop_map(|v| json!(v)),
            ],
            b in proptest::option::of("[aAbéÉſK\\.-]{0,6}"),
        ) {
            let mut yaml = String::from(
                "title: t\nlogsource: {category: test}\ndetection:\n  selection:\n    A|exists: true\n",
            );
            for (index, (field, modifier, values)) in filters.iter().enumerate() {
                let mut values: Vec<String> =
                    values.iter().map(|value| format!("'{value}'")).collect();
                if modifier.ends_with("|all") && values.len() == 1 {
                    // rsigma refuses `|all` over one value.
                    values.push("'a'".into());
                }
                yaml.push_str(&format!(
                    "  filter_{index}:\n    {field}{modifier}: [{}]\n",
                    values.join(", ")
                ));
            }
            let condition = match shape {
                0 => "selection and not 1 of filter_*",
                1 => "not 1 of filter_*",
                2 => "selection and not all of filter_*",
                3 => "not (selection and 1 of filter_*) and selection",
                4 => "selection and not 2 of filter_*",
                5 => "selection and not all of them",
                6 => "selection and not (1 of filter_* and not filter_0)",
                _ => "selection and not (filter_0 or not selection)",
            };
            yaml.push_str(&format!("  condition: {condition}\n"));
            let (gate, rules) = gate(&yaml);
            let mut record = serde_json::Map::new();
            record.insert("A".into(), a);
            if let Some(b) = b {
                record.insert("B".into(), b.into());
            }
            assert_sound(&gate, &rules, serde_json::Value::Object(record));
        }

        /// A `fieldref` rule is selected whenever rsigma matches it: every form, on strings in
        /// and outside ASCII (the Kelvin sign lowercases to `k`, `Σ` to `σ` or `ς`), numbers,
        /// booleans, arrays, `null` and absent fields.
        #[test]
        fn field_references_are_selected_whenever_they_match(
            modifier in prop::sample::select(vec![
                "|fieldref", "|fieldref|contains", "|fieldref|startswith", "|fieldref|endswith",
            ]),
            values in proptest::collection::vec(
                proptest::option::of(prop_oneof![
                    "[aAkKσΣςſsé]{0,4}".prop_map(serde_json::Value::from),
                    Just(serde_json::Value::Null),
                    Just(json!(1)),
                    Just(json!("1")),
                    Just(json!(false)),
                    proptest::collection::vec("[aAkK]{0,2}", 0..3).prop_map(|v| json!(v)),
                ]),
                2,
            ),
        ) {
            let yaml = format!(
                "title: t\nlogsource: {{category: test}}\ndetection:\n  selection:\n    \
                 A{modifier}: B\n  condition: selection\n"
            );
            let (gate, rules) = gate(&yaml);
            let mut record = serde_json::Map::new();
            for (name, value) in ["A", "B"].into_iter().zip(values) {
                if let Some(value) = value {
                    record.insert(name.into(), value);
                }
            }
            assert_sound(&gate, &rules, serde_json::Value::Object(record));
        }

        /// Teddy over lowercased text marks exactly the needles the automaton finds ignoring
        /// ASCII case, overlapping and nested ones included.
        #[test]
        fn packed_search_marks_what_the_automaton_marks(
            needles in proptest::collection::vec("[abAB\\\\0é ſ\u{212A}]{1,4}", 2..40),
            text in "[abAB\\\\0é ſ\u{212A}.]{0,200}",
        ) {
            let atoms: Vec<u32> = (0..needles.len() as u32).collect();
            let Some(packed) = Needles::packed(&needles, &atoms) else {
                // No Teddy on this CPU: nothing to compare.
                return Ok(());
            };
            let automaton = Needles::automaton(&needles, atoms.clone()).unwrap();
            let marked = |needles: &Needles, text: &str| marked_atoms(needles, text, atoms.len());
            proptest::prop_assert_eq!(
                marked(&packed, &text.to_ascii_lowercase()),
                marked(&automaton, &text)
            );
        }
    }
}
