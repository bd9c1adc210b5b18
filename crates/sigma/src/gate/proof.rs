//! Vetoes: facts about a record that prove a rule cannot match it.
//!
//! The gate's trees are necessary conditions read off a condition's positive parts. A rule that
//! rests on a `not` (`not known_extension and not 1 of filter_*`), or whose positive part holds
//! on most records (`Image|endswith` of a common binary `and not filter`), passes its tree on
//! nearly every record of its logsource and paid rsigma's full evaluation there. A veto is the
//! other direction: a condition that implies the rule's condition is false, because some `not X`
//! in it has `X` proven true. A rule whose tree holds is checked against its veto before rsigma
//! sees it; the check reads the few fields the filters name, only for such a rule.
//!
//! # Soundness
//!
//! A veto only ever drops a rule rsigma would not match. It proves `X` only from items whose
//! truth it establishes exactly as rsigma would:
//! - the item names a field and its matcher is case-insensitive with an ASCII literal, stored
//!   lowercase as rsigma stores it: an equality, a substring, a prefix or a suffix (rsigma
//!   lowercases the value and compares it with that literal);
//! - the field's value is one string, and ASCII, where ASCII lowercasing is rsigma's
//!   `str::to_lowercase`. A number, a boolean, an array, a map, `null`, an absent field or a
//!   string outside ASCII proves nothing.
//!
//! Everything else (regexes, wildcards, case-sensitive literals, `null`, `exists`, numbers,
//! keywords, a `not` inside `X`) proves nothing. One proven branch proves an `or`; every part
//! of an `and` must be proven. Where nothing is proven the rule is evaluated as before.

use rsigma_eval::matcher::GroupMode;
use rsigma_eval::{
    CompiledDetection, CompiledDetectionItem, CompiledMatcher, CompiledRule, Event, EventValue,
};
use rsigma_parser::{ConditionExpr, Quantifier};

/// A condition over a record's fields; where it holds, part of a rule is proven true (or, as a
/// veto, the rule false).
#[derive(Debug)]
pub(super) enum Proof {
    /// The field's value is one ASCII string the test holds on.
    Field {
        name: String,
        test: Text,
    },
    All(Box<[Proof]>),
    Any(Box<[Proof]>),
}

/// A test on an ASCII string; literals are ASCII and lowercase, compared ignoring ASCII case.
#[derive(Debug)]
pub(super) enum Text {
    Exact(Box<[u8]>),
    Contains(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    All(Box<[Text]>),
    Any(Box<[Text]>),
}

impl Proof {
    pub(super) fn holds<E: Event>(&self, event: &E) -> bool {
        match self {
            Proof::Field { name, test } => event.get_field(name).is_some_and(|value| match value {
                EventValue::Str(text) => text.is_ascii() && test.holds(text.as_bytes()),
                _ => false,
            }),
            Proof::All(parts) => parts.iter().all(|part| part.holds(event)),
            Proof::Any(parts) => parts.iter().any(|part| part.holds(event)),
        }
    }
}

impl Text {
    fn holds(&self, text: &[u8]) -> bool {
        match self {
            Text::Exact(literal) => text.eq_ignore_ascii_case(literal),
            Text::Contains(literal) => super::contains_ignoring_ascii_case(text, literal),
            Text::Prefix(literal) => text
                .get(..literal.len())
                .is_some_and(|part| part.eq_ignore_ascii_case(literal)),
            Text::Suffix(literal) => text
                .len()
                .checked_sub(literal.len())
                .and_then(|at| text.get(at..))
                .is_some_and(|part| part.eq_ignore_ascii_case(literal)),
            Text::All(parts) => parts.iter().all(|part| part.holds(text)),
            Text::Any(parts) => parts.iter().any(|part| part.holds(text)),
        }
    }
}

/// A condition under which `rule` cannot match, if the analysis finds one.
pub(super) fn veto(rule: &CompiledRule) -> Option<Proof> {
    // The rule matches when any of its conditions does: every one must be refuted (and a rule
    // without conditions gets no veto: `every` of nothing is nothing).
    let refuted = rule
        .conditions
        .iter()
        .map(|condition| refute(condition, rule))
        .collect();
    every(refuted, Proof::All)
}

/// A condition under which `condition` is false.
fn refute(condition: &ConditionExpr, rule: &CompiledRule) -> Option<Proof> {
    match condition {
        ConditionExpr::Not(inner) => prove(inner, rule),
        ConditionExpr::And(parts) => some(
            parts.iter().map(|part| refute(part, rule)).collect(),
            Proof::Any,
        ),
        ConditionExpr::Or(parts) => every(
            parts.iter().map(|part| refute(part, rule)).collect(),
            Proof::All,
        ),
        // A positive selection is refuted where the gate's tree for it fails, which the tree
        // already tests.
        ConditionExpr::Identifier(_) | ConditionExpr::Selector { .. } => None,
    }
}

/// A condition under which `condition` is true.
fn prove(condition: &ConditionExpr, rule: &CompiledRule) -> Option<Proof> {
    match condition {
        ConditionExpr::Identifier(name) => detection(rule.detections.get(name)?),
        ConditionExpr::And(parts) => every(
            parts.iter().map(|part| prove(part, rule)).collect(),
            Proof::All,
        ),
        ConditionExpr::Or(parts) => some(
            parts.iter().map(|part| prove(part, rule)).collect(),
            Proof::Any,
        ),
        ConditionExpr::Not(_) => None,
        ConditionExpr::Selector {
            quantifier,
            pattern,
        } => {
            let named = super::named_detections(rule, pattern);
            if named.is_empty() {
                return None;
            }
            let proven = named.into_iter().map(detection).collect();
            match quantifier {
                Quantifier::Any | Quantifier::Count(1) => some(proven, Proof::Any),
                Quantifier::All => every(proven, Proof::All),
                Quantifier::Count(_) => None,
            }
        }
    }
}

fn detection(detection: &CompiledDetection) -> Option<Proof> {
    match detection {
        CompiledDetection::AllOf(items) => every(items.iter().map(item).collect(), Proof::All),
        CompiledDetection::AnyOf(parts) => {
            some(parts.iter().map(self::detection).collect(), Proof::Any)
        }
        CompiledDetection::And(parts) => {
            every(parts.iter().map(self::detection).collect(), Proof::All)
        }
        CompiledDetection::Keywords(_)
        | CompiledDetection::ArrayMatch { .. }
        | CompiledDetection::Conditional { .. } => None,
    }
}

fn item(item: &CompiledDetectionItem) -> Option<Proof> {
    let name = item.field.as_deref()?;
    if item.exists.is_some() {
        return None;
    }
    Some(Proof::Field {
        name: name.to_owned(),
        test: text(&item.matcher)?,
    })
}

fn text(matcher: &CompiledMatcher) -> Option<Text> {
    // rsigma stores case-insensitive literals lowercased and compares lowercased text with
    // them; a literal with an uppercase letter (which rsigma 0.23 never makes) could match
    // nothing there, and proves nothing here.
    let literal = |value: &str| -> Option<Box<[u8]>> {
        (!value.is_empty() && value.is_ascii() && !value.bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| value.as_bytes().into())
    };
    match matcher {
        CompiledMatcher::Exact {
            value,
            case_insensitive: true,
        } => literal(value).map(Text::Exact),
        CompiledMatcher::Contains {
            value,
            case_insensitive: true,
        } => literal(value).map(Text::Contains),
        CompiledMatcher::StartsWith {
            value,
            case_insensitive: true,
        } => literal(value).map(Text::Prefix),
        CompiledMatcher::EndsWith {
            value,
            case_insensitive: true,
        } => literal(value).map(Text::Suffix),
        CompiledMatcher::AhoCorasickSet {
            needles,
            case_insensitive: true,
            ..
        } => some(
            needles
                .iter()
                .map(|needle| literal(needle).map(Text::Contains))
                .collect(),
            Text::Any,
        ),
        CompiledMatcher::AnyOf(children) => some(children.iter().map(text).collect(), Text::Any),
        CompiledMatcher::AllOf(children) => every(children.iter().map(text).collect(), Text::All),
        CompiledMatcher::CaseInsensitiveGroup { children, mode } => {
            let proven = children.iter().map(text).collect();
            match mode {
                GroupMode::Any => some(proven, Text::Any),
                GroupMode::All => every(proven, Text::All),
            }
        }
        _ => None,
    }
}

/// Every part proven: all of them, or nothing.
fn every<T>(parts: Vec<Option<T>>, all: fn(Box<[T]>) -> T) -> Option<T> {
    let mut parts: Vec<T> = parts.into_iter().collect::<Option<_>>()?;
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(all(parts.into_boxed_slice())),
    }
}

/// Any part proven: the parts with a proof, or nothing when none has one.
fn some<T>(parts: Vec<Option<T>>, any: fn(Box<[T]>) -> T) -> Option<T> {
    let mut parts: Vec<T> = parts.into_iter().flatten().collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(any(parts.into_boxed_slice())),
    }
}
