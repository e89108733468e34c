//! Label selectors and field selectors, parsed and matched as kube-apiserver does for
//! `?labelSelector=` and `?fieldSelector=`.
//!
//! - [`LabelSelector`] follows `k8s.io/apimachinery/pkg/labels`: the string grammar of
//!   `labels.Parse` (equality `a=b`, `a==b`, `a!=b`; set-based `a in (x,y)`, `a notin (x)`;
//!   existence `a`, `!a`; and the numeric `a>1`, `a<1` that upstream also accepts), and the
//!   `metav1.LabelSelector` JSON form through [`LabelSelector::from_label_selector`]
//!   (`metav1.LabelSelectorAsSelector`). Keys and values are validated as upstream
//!   (`validation.IsQualifiedName`, `validation.IsValidLabelValue`) with the same wording.
//! - [`FieldSelector`] follows `k8s.io/apimachinery/pkg/fields.ParseSelector`: `f=v`, `f==v`,
//!   `f!=v` joined by commas, with `\`, `,` and `=` escaped by a backslash in values.
//!
//! Both are pure: matching reads the JSON the caller passes and nothing else. What this module
//! does not do: decide which field labels a resource supports (the server checks
//! [`FieldSelector::fields`] against its own list), or fill the per-kind defaults upstream's
//! field-set functions compute (a missing field compares as `""`, see [`FieldSelector::matches`]).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

/// A label or field selector that could not be parsed, with what was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The label selector string does not follow the grammar. `message` is upstream's wording
    /// (`found ')', expected: identifier`); `offset` is the byte offset of the offending token.
    #[error("{message} (at offset {offset} of label selector {selector:?})")]
    Syntax { selector: String, offset: usize, message: String },
    /// A label key that is not a qualified name (`[prefix/]name`).
    #[error("unable to parse requirement: invalid label key {key:?}: {reason}")]
    InvalidLabelKey { key: String, reason: String },
    /// A label value that is not a valid label value.
    #[error(
        "unable to parse requirement: invalid label value: {value:?}: at key: {key:?}: {reason}"
    )]
    InvalidLabelValue { key: String, value: String, reason: String },
    /// A requirement whose values do not fit its operator (for example `in` with no values).
    #[error("unable to parse requirement: {reason} (key {key:?})")]
    InvalidRequirement { key: String, reason: String },
    /// A `matchExpressions[].operator` other than `In`, `NotIn`, `Exists`, `DoesNotExist`.
    #[error("{operator:?} is not a valid label selector operator (key {key:?})")]
    InvalidOperator { key: String, operator: String },
    /// A `metav1.LabelSelector` JSON value of the wrong shape.
    #[error("invalid label selector: {field}: {reason}")]
    InvalidLabelSelector { field: String, reason: String },
    /// A field selector term without `=`, `==` or `!=`.
    #[error("invalid field selector: '{selector}'; can't understand '{term}'")]
    FieldTerm { selector: String, term: String },
    /// A backslash in a field selector value followed by something other than `\`, `,`, `=`.
    #[error("invalid field selector: invalid escape sequence: {sequence} in '{term}'")]
    InvalidEscape { term: String, sequence: String },
    /// A `,` or `=` in a field selector value that is not escaped with a backslash.
    #[error("invalid field selector: unescaped character in value: '{character}' in '{term}'")]
    UnescapedCharacter { term: String, character: char },
}

pub type Result<T, E = SelectorError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// The operator of one label requirement (`selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    In,
    NotIn,
    Equals,
    DoubleEquals,
    NotEquals,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement: a key, an operator and the operator's values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    /// `labels.NewRequirement`: validates the key, the number of values for the operator, and
    /// each value.
    fn new(key: String, op: Op, values: Vec<String>) -> Result<Self> {
        validate_label_key(&key)?;
        let invalid = |reason: &str| {
            Err(SelectorError::InvalidRequirement { key: key.clone(), reason: reason.to_owned() })
        };
        match op {
            Op::In | Op::NotIn if values.is_empty() => {
                return invalid("for 'in', 'notin' operators, values set can't be empty");
            }
            Op::Equals | Op::DoubleEquals | Op::NotEquals if values.len() != 1 => {
                return invalid("exact-match compatibility requires one single value");
            }
            Op::Exists | Op::DoesNotExist if !values.is_empty() => {
                return invalid("values set must be empty for exists and does not exist");
            }
            Op::GreaterThan | Op::LessThan => {
                if values.len() != 1 {
                    return invalid("for 'Gt', 'Lt' operators, exactly one value is required");
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return invalid("for 'Gt', 'Lt' operators, the value must be an integer");
                }
            }
            _ => {}
        }
        for v in &values {
            validate_label_value(&key, v)?;
        }
        Ok(Self { key, op, values })
    }

    fn has_value(&self, v: Option<&str>) -> bool {
        v.is_some_and(|v| self.values.iter().any(|x| x == v))
    }

    /// `Requirement.Matches`: `notin` and `!=` match objects without the key, as upstream.
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let present = labels.and_then(|l| l.get(&self.key));
        self.matches_entry(present.map(Value::as_str))
    }

    /// `Requirement.Matches` on one label: `None` when the object lacks the key, `Some(None)`
    /// when its value is not a string.
    fn matches_entry(&self, present: Option<Option<&str>>) -> bool {
        let value = present.flatten();
        match self.op {
            Op::In | Op::Equals | Op::DoubleEquals => present.is_some() && self.has_value(value),
            Op::NotIn | Op::NotEquals => present.is_none() || !self.has_value(value),
            Op::Exists => present.is_some(),
            Op::DoesNotExist => present.is_none(),
            Op::GreaterThan | Op::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == Op::GreaterThan { have > want } else { have < want }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// `Requirement.String`: `!k`, `k`, `k=v`, `k in (a,b)`; set values printed sorted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.op == Op::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.op {
            Op::Exists | Op::DoesNotExist => return Ok(()),
            Op::Equals => "=",
            Op::DoubleEquals => "==",
            Op::NotEquals => "!=",
            Op::In => " in ",
            Op::NotIn => " notin ",
            Op::GreaterThan => ">",
            Op::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.op, Op::In | Op::NotIn);
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        if set {
            f.write_str("(")?;
        }
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: the AND of its requirements.
///
/// The default (and the result of parsing `""`) is the empty selector, which matches every
/// object. A JSON `null` given to [`LabelSelector::from_label_selector`] yields the selector that
/// matches nothing (`labels.Nothing()`), as `metav1.LabelSelectorAsSelector(nil)` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Sorted by key (stable), as upstream sorts after parsing so the string form is canonical.
    requirements: Vec<Requirement>,
    nothing: bool,
}

impl LabelSelector {
    /// Parses the `?labelSelector=` string form (`labels.Parse`).
    ///
    /// # Errors
    ///
    /// [`SelectorError::Syntax`] for input outside the grammar, [`SelectorError::InvalidLabelKey`]
    /// and [`SelectorError::InvalidLabelValue`] for keys and values that are not valid labels,
    /// [`SelectorError::InvalidRequirement`] for a `>`/`<` value that is not an integer.
    pub fn parse(s: &str) -> Result<Self> {
        let mut requirements = Parser::new(s).parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// Converts a `metav1.LabelSelector` JSON value (`{matchLabels, matchExpressions}`), as
    /// `metav1.LabelSelectorAsSelector`: `null` matches nothing, `{}` matches everything.
    ///
    /// # Errors
    ///
    /// [`SelectorError::InvalidLabelSelector`] for a value of the wrong shape,
    /// [`SelectorError::InvalidOperator`] for an unknown operator, and the key, value and
    /// requirement errors of [`LabelSelector::parse`].
    pub fn from_label_selector(v: &Value) -> Result<Self> {
        let shape = |field: &str, reason: &str| SelectorError::InvalidLabelSelector {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let obj = match v {
            Value::Null => return Ok(Self { requirements: Vec::new(), nothing: true }),
            Value::Object(o) => o,
            _ => return Err(shape("selector", "must be an object")),
        };
        let mut requirements = Vec::new();
        match obj.get("matchLabels") {
            None | Some(Value::Null) => {}
            Some(Value::Object(labels)) => {
                for (k, v) in labels {
                    let Some(v) = v.as_str() else {
                        return Err(shape(&format!("matchLabels[{k}]"), "must be a string"));
                    };
                    requirements.push(Requirement::new(k.clone(), Op::Equals, vec![v.to_owned()])?);
                }
            }
            Some(_) => return Err(shape("matchLabels", "must be an object")),
        }
        match obj.get("matchExpressions") {
            None | Some(Value::Null) => {}
            Some(Value::Array(exprs)) => {
                for (i, expr) in exprs.iter().enumerate() {
                    let field = |f: &str| format!("matchExpressions[{i}]{f}");
                    let Some(expr) = expr.as_object() else {
                        return Err(shape(&field(""), "must be an object"));
                    };
                    let string = |name: &str| match expr.get(name) {
                        None | Some(Value::Null) => Ok(""),
                        Some(Value::String(s)) => Ok(s.as_str()),
                        Some(_) => Err(shape(&field(&format!(".{name}")), "must be a string")),
                    };
                    let key = string("key")?;
                    let operator = string("operator")?;
                    let op = match operator {
                        "In" => Op::In,
                        "NotIn" => Op::NotIn,
                        "Exists" => Op::Exists,
                        "DoesNotExist" => Op::DoesNotExist,
                        other => {
                            return Err(SelectorError::InvalidOperator {
                                key: key.to_owned(),
                                operator: other.to_owned(),
                            });
                        }
                    };
                    let values = match expr.get("values") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(vs)) => vs
                            .iter()
                            .enumerate()
                            .map(|(j, v)| {
                                v.as_str().map(str::to_owned).ok_or_else(|| {
                                    shape(&field(&format!(".values[{j}]")), "must be a string")
                                })
                            })
                            .collect::<Result<Vec<_>>>()?,
                        Some(_) => return Err(shape(&field(".values"), "must be an array")),
                    };
                    requirements.push(Requirement::new(key.to_owned(), op, values)?);
                }
            }
            Some(_) => return Err(shape("matchExpressions", "must be an array")),
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements, nothing: false })
    }

    /// Whether an object with these `metadata.labels` is selected. `None` means no labels.
    /// Label values that are not JSON strings never equal a selector value.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// [`Self::matches`] with the labels read through `label` (`None`: no such key;
    /// `Some(None)`: a value that is not a string), for callers that keep labels outside a
    /// JSON map.
    pub fn matches_with<'a>(&self, label: impl Fn(&str) -> Option<Option<&'a str>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches_entry(label(&r.key)))
    }

    /// Whether the selector places no restriction (matches every object), as `Selector.Empty`.
    /// The match-nothing selector is not empty.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical string form (`Selector.String`): requirements sorted by key, joined by `,`.
    /// Both the empty and the match-nothing selector print as `""`, as upstream.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

// The lexer and parser below follow `labels.Lexer` and `labels.Parser` token for token, so
// corner cases (`x in (,a)`, `x in ()`, `in in (in)`) parse as they do upstream.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    EndOfString,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

#[derive(Debug, Clone)]
struct Scanned<'a> {
    tok: Token,
    lit: &'a str,
    offset: usize,
}

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn symbol_token(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

/// Splits the input into tokens. Identifiers run until whitespace or a special character;
/// `in` and `notin` are keywords (turned back into identifiers where a value is expected).
fn lex(s: &str) -> Vec<Scanned<'_>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        let start = pos;
        if pos == bytes.len() {
            out.push(Scanned { tok: Token::EndOfString, lit: "", offset: start });
            return out;
        }
        if is_special(bytes[pos]) {
            // Longest operator: every single special character is a token, and `!=`, `==` are
            // the only two-character ones (upstream's scanSpecialSymbol amounts to this).
            let two = matches!(bytes.get(pos..pos + 2), Some(b"!=" | b"=="));
            let end = if two { pos + 2 } else { pos + 1 };
            let lit = &s[pos..end];
            let tok = symbol_token(lit).unwrap_or(Token::Identifier);
            out.push(Scanned { tok, lit, offset: start });
            pos = end;
            continue;
        }
        while pos < bytes.len() && !is_special(bytes[pos]) && !is_whitespace(bytes[pos]) {
            pos += 1;
        }
        // Only ASCII bytes end an identifier, so `start..pos` are char boundaries.
        let lit = &s[start..pos];
        let tok = match lit {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier,
        };
        out.push(Scanned { tok, lit, offset: start });
    }
}

/// Whether `in`/`notin` keywords count as identifiers (where values are expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser<'a> {
    input: &'a str,
    items: Vec<Scanned<'a>>,
    position: usize,
}

impl<'a> Parser<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, items: lex(input), position: 0 }
    }

    fn token(&self, index: usize, ctx: Context) -> (Token, &'a str, usize) {
        // The last item is always EndOfString; reading past it keeps returning it.
        let item = &self.items[index.min(self.items.len() - 1)];
        let tok = match (ctx, item.tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, t) => t,
        };
        (tok, item.lit, item.offset)
    }

    fn lookahead(&self, ctx: Context) -> (Token, &'a str, usize) {
        self.token(self.position, ctx)
    }

    fn consume(&mut self, ctx: Context) -> (Token, &'a str, usize) {
        let t = self.token(self.position, ctx);
        self.position += 1;
        t
    }

    fn syntax(&self, offset: usize, message: String) -> SelectorError {
        SelectorError::Syntax { selector: self.input.to_owned(), offset, message }
    }

    /// Upstream prefixes errors from inside one requirement with `unable to parse requirement`.
    fn requirement_syntax(&self, offset: usize, message: String) -> SelectorError {
        self.syntax(offset, format!("unable to parse requirement: {message}"))
    }

    fn parse(&mut self) -> Result<Vec<Requirement>> {
        let mut requirements = Vec::new();
        loop {
            let (tok, lit, offset) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    requirements.push(self.parse_requirement()?);
                    let (t, l, o) = self.consume(Context::Values);
                    match t {
                        Token::EndOfString => return Ok(requirements),
                        Token::Comma => {
                            let (t2, l2, o2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(self.syntax(
                                    o2,
                                    format!("found '{l2}', expected: identifier after ','"),
                                ));
                            }
                        }
                        _ => {
                            return Err(self.syntax(
                                o,
                                format!("found '{l}', expected: ',' or 'end of string'"),
                            ));
                        }
                    }
                }
                Token::EndOfString => return Ok(requirements),
                _ => {
                    return Err(self.syntax(
                        offset,
                        format!("found '{lit}', expected: !, identifier, or 'end of string'"),
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return Requirement::new(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values: BTreeSet<String> = match op {
            Op::In | Op::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, op, values.into_iter().collect())
    }

    /// Reads `[!]key`; returns `Exists`/`DoesNotExist` when no binary operator follows.
    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Op>)> {
        let mut op = None;
        let (mut tok, mut lit, mut offset) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Op::DoesNotExist);
            (tok, lit, offset) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(
                self.requirement_syntax(offset, format!("found '{lit}', expected: identifier"))
            );
        }
        validate_label_key(lit)?;
        let (next, _, _) = self.lookahead(Context::Values);
        if op.is_none() && matches!(next, Token::EndOfString | Token::Comma) {
            op = Some(Op::Exists);
        }
        Ok((lit.to_owned(), op))
    }

    fn parse_operator(&mut self) -> Result<Op> {
        let (tok, lit, offset) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::In => Op::In,
            Token::Equals => Op::Equals,
            Token::DoubleEquals => Op::DoubleEquals,
            Token::GreaterThan => Op::GreaterThan,
            Token::LessThan => Op::LessThan,
            Token::NotIn => Op::NotIn,
            Token::NotEquals => Op::NotEquals,
            _ => {
                return Err(self.requirement_syntax(
                    offset,
                    format!("found '{lit}', expected: '=', '!=', '==', 'in', 'notin', '>' or '<'"),
                ));
            }
        })
    }

    /// `(a,b,c)`; `()` is the set holding the empty value, as upstream.
    fn parse_values(&mut self) -> Result<BTreeSet<String>> {
        let (tok, lit, offset) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(self.requirement_syntax(offset, format!("found '{lit}' expected: '('")));
        }
        let (tok, lit, offset) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, lit, offset) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(
                        self.requirement_syntax(offset, format!("found '{lit}', expected: ')'"))
                    );
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(BTreeSet::from([String::new()]))
            }
            _ => Err(self.requirement_syntax(
                offset,
                format!("found '{lit}', expected: ',', ')' or identifier"),
            )),
        }
    }

    /// A comma-separated list of possibly empty values, up to (not including) `)`.
    fn parse_identifiers_list(&mut self) -> Result<BTreeSet<String>> {
        let mut set = BTreeSet::new();
        loop {
            let (tok, lit, offset) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit.to_owned());
                    let (tok2, lit2, offset2) = self.lookahead(Context::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set),
                        _ => {
                            return Err(self.requirement_syntax(
                                offset2,
                                format!("found '{lit2}', expected: ',' or ')'"),
                            ));
                        }
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new()); // `(,`
                    }
                    let (tok2, _, _) = self.lookahead(Context::Values);
                    if tok2 == Token::ClosedPar {
                        set.insert(String::new()); // `,)`
                        return Ok(set);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new()); // `,,`
                    }
                }
                _ => {
                    return Err(self.requirement_syntax(
                        offset,
                        format!("found '{lit}', expected: ',', or identifier"),
                    ));
                }
            }
        }
    }

    /// The single value after `=`, `==`, `!=`, `>`, `<`; empty at `,` or the end.
    fn parse_exact_value(&mut self) -> Result<BTreeSet<String>> {
        let (tok, _, _) = self.lookahead(Context::Values);
        if matches!(tok, Token::EndOfString | Token::Comma) {
            return Ok(BTreeSet::from([String::new()]));
        }
        let (tok, lit, offset) = self.consume(Context::Values);
        if tok == Token::Identifier {
            return Ok(BTreeSet::from([lit.to_owned()]));
        }
        Err(self.requirement_syntax(offset, format!("found '{lit}', expected: identifier")))
    }
}

// Validation with the wording of `k8s.io/apimachinery/pkg/util/validation`.

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
                                  must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_ERR: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
                                     alphanumeric characters, '-' or '.', and must start and end \
                                     with an alphanumeric character";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric \
                               characters, '-', '_' or '.', and must start and end with an \
                               alphanumeric character";

/// `validation.RegexError`: the message, examples and the regex.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    // Upstream appends "'x', " per example with " or " between, hence the double spaces.
    let examples: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!("{msg} (e.g. {}regex used for validation is '{fmt}')", examples.join(" or "))
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, anchored.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A lowercase RFC 1123 subdomain: dot-separated labels of `[a-z0-9]([-a-z0-9]*[a-z0-9])?`.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        match (b.first(), b.last()) {
            (Some(first), Some(last)) => {
                let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
                ok(first) && ok(last) && b.iter().all(|c| ok(c) || *c == b'-')
            }
            _ => false,
        }
    })
}

/// `validation.IsQualifiedName` for any field that must hold one (an Event's
/// `reportingController`, for example): `None` when `s` is one, else upstream's reasons joined
/// with `; `.
pub fn qualified_name_error(s: &str) -> Option<String> {
    match validate_label_key(s) {
        Ok(()) => None,
        Err(SelectorError::InvalidLabelKey { reason, .. }) => Some(reason),
        Err(e) => Some(e.to_string()),
    }
}

/// `validation.IsQualifiedName`, joined with `; ` as `labels.validateLabelKey` does.
fn validate_label_key(key: &str) -> Result<()> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts[..] {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_owned());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push(format!(
                        "prefix part {}",
                        regex_error(DNS1123_SUBDOMAIN_ERR, DNS1123_SUBDOMAIN_FMT, &["example.com"])
                    ));
                }
            }
            name
        }
        _ => {
            return Err(SelectorError::InvalidLabelKey {
                key: key.to_owned(),
                reason: format!(
                    "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. \
                     'example.com/MyName')",
                    regex_error(
                        QUALIFIED_NAME_ERR,
                        QUALIFIED_NAME_FMT,
                        &["MyName", "my.name", "123-abc"]
                    )
                ),
            });
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_owned());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidLabelKey { key: key.to_owned(), reason: errs.join("; ") })
    }
}

/// `validation.IsValidLabelValue`: empty, or a qualified-name part of at most 63 characters.
fn validate_label_value(key: &str, value: &str) -> Result<()> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            &format!("({QUALIFIED_NAME_FMT})?"),
            &["MyValue", "my_value", "12345"],
        ));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(SelectorError::InvalidLabelValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: errs.join("; "),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldOp {
    Equals,
    NotEquals,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    op: FieldOp,
    /// Unescaped.
    value: String,
}

/// A field selector: the AND of `field=value` and `field!=value` terms.
///
/// The default (and the result of parsing `""`) matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// In the order of the sorted raw terms, as `fields.ParseSelector` keeps them.
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses the `?fieldSelector=` string form (`fields.ParseSelector`).
    ///
    /// Terms are split at unescaped commas; each term splits at its first `!=`, `==` or `=`
    /// (the field name cannot be escaped); the value is unescaped (`\\`, `\,`, `\=`). Empty terms
    /// are skipped. Field names are not checked here: see [`FieldSelector::fields`].
    ///
    /// # Errors
    ///
    /// [`SelectorError::FieldTerm`] for a term without an operator,
    /// [`SelectorError::InvalidEscape`] and [`SelectorError::UnescapedCharacter`] for values.
    pub fn parse(s: &str) -> Result<Self> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::with_capacity(parts.len());
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((field, op, rhs)) = split_term(part) else {
                return Err(SelectorError::FieldTerm {
                    selector: s.to_owned(),
                    term: part.to_owned(),
                });
            };
            let value = unescape_value(part, rhs)?;
            terms.push(FieldTerm { field: field.to_owned(), op, value });
        }
        Ok(Self { terms })
    }

    /// The field labels this selector reads, in order (repeats possible), so the server can
    /// reject labels the resource does not support.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Whether the object is selected. A field label is a dotted path into the object's JSON
    /// (`metadata.name`, `spec.nodeName`, `involvedObject.kind`). A missing field or `null`
    /// compares as `""`, booleans and numbers as their JSON text (`true`, `3`).
    ///
    /// # Caveats
    ///
    /// Upstream compares against per-kind field sets that fill defaults the stored object may
    /// omit; the one that differs from `""` is Node `spec.unschedulable`, which upstream sets to
    /// `false` when absent. Callers that support it should store the default.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(obj, &t.field);
            match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }

    /// [`Self::matches`] with the field values read through `field` (the string each label
    /// compares as), or `None` when the caller cannot answer from `field` alone and has to
    /// decode the object.
    pub fn matches_with<'a>(&self, field: impl Fn(&str) -> Option<&'a str>) -> Option<bool> {
        let mut all = true;
        for t in &self.terms {
            let have = field(&t.field)?;
            all &= match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            };
        }
        Some(all)
    }

    /// Whether the selector places no restriction.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value an `=`/`==` term requires of `field`, if there is one
    /// (`Selector.RequiresExactMatch`), so the server can narrow a list by name or namespace.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.op == FieldOp::Equals && t.field == field)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical string form: `f=v` / `f!=v` with values escaped, joined by `,`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match t.op {
                FieldOp::Equals => "=",
                FieldOp::NotEquals => "!=",
            };
            f.write_str(&t.field)?;
            f.write_str(op)?;
            for c in t.value.chars() {
                if matches!(c, '\\' | ',' | '=') {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// `fields.splitTerms`: split at commas not preceded by an escaping backslash; the backslashes
/// stay in the terms.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// `fields.splitTerm`: the first occurrence of `!=`, `==` or `=` (tried in that order at each
/// position) splits the term.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in
            [("!=", FieldOp::NotEquals), ("==", FieldOp::Equals), ("=", FieldOp::Equals)]
        {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, rhs));
            }
        }
    }
    None
}

/// `fields.UnescapeValue`.
fn unescape_value(term: &str, s: &str) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::InvalidEscape {
                    term: term.to_owned(),
                    sequence: format!("\\{c}"),
                });
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::UnescapedCharacter {
                    term: term.to_owned(),
                    character: c,
                });
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape {
            term: term.to_owned(),
            sequence: "\\".to_owned(),
        });
    }
    Ok(out)
}

/// The string a field label compares as: see [`FieldSelector::matches`].
fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};
    use serde_json::json;

    use super::*;

    /// The canonical form of a parsed label selector, or the error.
    fn check(input: &str, expect: Expect) {
        let actual = match LabelSelector::parse(input) {
            Ok(s) => format!("ok {:?} empty={}", s.to_string(), s.is_empty()),
            Err(e) => format!("error {e}"),
        };
        expect.assert_eq(&actual);
    }

    /// One line per label set: the labels and whether the selector matches them.
    fn check_matches(selector: &LabelSelector, label_sets: &[Value], expect: Expect) {
        let actual: Vec<String> = label_sets
            .iter()
            .map(|l| format!("{l} -> {}", selector.matches(l.as_object())))
            .collect();
        expect.assert_eq(&actual.join("\n"));
    }

    fn parsed(s: &str) -> LabelSelector {
        LabelSelector::parse(s).expect("test selector parses")
    }

    fn check_json(input: Value, expect: Expect) {
        let actual = match LabelSelector::from_label_selector(&input) {
            Ok(s) => format!("ok {:?} empty={}", s.to_string(), s.is_empty()),
            Err(e) => format!("error {e}"),
        };
        expect.assert_eq(&actual);
    }

    fn check_field(input: &str, expect: Expect) {
        let actual = match FieldSelector::parse(input) {
            Ok(s) => format!(
                "ok {:?} fields={:?} empty={}",
                s.to_string(),
                s.fields().collect::<Vec<_>>(),
                s.is_empty()
            ),
            Err(e) => format!("error {e}"),
        };
        expect.assert_eq(&actual);
    }

    fn check_field_matches(selector: &str, objects: &[Value], expect: Expect) {
        let s = FieldSelector::parse(selector).expect("test selector parses");
        let actual: Vec<String> =
            objects.iter().map(|o| format!("{o} -> {}", s.matches(o))).collect();
        expect.assert_eq(&actual.join("\n"));
    }

    #[test]
    fn parse_equality() {
        check("", expect![[r#"ok "" empty=true"#]]);
        check("  ", expect![[r#"ok "" empty=true"#]]);
        check("a=b", expect![[r#"ok "a=b" empty=false"#]]);
        check("a==b", expect![[r#"ok "a==b" empty=false"#]]);
        check("a!=b", expect![[r#"ok "a!=b" empty=false"#]]);
        check(" a = b , c != d ", expect![[r#"ok "a=b,c!=d" empty=false"#]]);
        check("a=", expect![[r#"ok "a=" empty=false"#]]);
        check("a=,b=c", expect![[r#"ok "a=,b=c" empty=false"#]]);
        check("z=1,a=2,m", expect![[r#"ok "a=2,m,z=1" empty=false"#]]);
        check(
            "example.com/app.name=my_value-1",
            expect![[r#"ok "example.com/app.name=my_value-1" empty=false"#]],
        );
    }

    #[test]
    fn parse_set_based() {
        check("a in (x,y)", expect![[r#"ok "a in (x,y)" empty=false"#]]);
        check("a in (y, x, y)", expect![[r#"ok "a in (x,y)" empty=false"#]]);
        check("a notin (x)", expect![[r#"ok "a notin (x)" empty=false"#]]);
        check("a in ()", expect![[r#"ok "a in ()" empty=false"#]]);
        check("a in (,x)", expect![[r#"ok "a in (,x)" empty=false"#]]);
        check("a in (x,,y)", expect![[r#"ok "a in (,x,y)" empty=false"#]]);
        check("in in (in, notin)", expect![[r#"ok "in in (in,notin)" empty=false"#]]);
        check("a", expect![[r#"ok "a" empty=false"#]]);
        check("!a", expect![[r#"ok "!a" empty=false"#]]);
        check("! a , b", expect![[r#"ok "!a,b" empty=false"#]]);
        check("a>1,b<2", expect![[r#"ok "a>1,b<2" empty=false"#]]);
        // As upstream, a `>`/`<` operand must also be a valid label value, so no negatives.
        check(
            "b<-2",
            expect![[
                r#"error unable to parse requirement: invalid label value: "-2": at key: "b": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#
            ]],
        );
        check(
            "x in (foo,,baz),y,z notin ()",
            expect![[r#"ok "x in (,baz,foo),y,z notin ()" empty=false"#]],
        );
    }

    #[test]
    fn parse_syntax_errors() {
        check(
            "a,",
            expect![[
                r#"error found '', expected: identifier after ',' (at offset 2 of label selector "a,")"#
            ]],
        );
        check(
            ",a",
            expect![[
                r#"error found ',', expected: !, identifier, or 'end of string' (at offset 0 of label selector ",a")"#
            ]],
        );
        check(
            "a b",
            expect![[
                r#"error unable to parse requirement: found 'b', expected: '=', '!=', '==', 'in', 'notin', '>' or '<' (at offset 2 of label selector "a b")"#
            ]],
        );
        check(
            "a in x",
            expect![[
                r#"error unable to parse requirement: found 'x' expected: '(' (at offset 5 of label selector "a in x")"#
            ]],
        );
        check(
            "a in (x",
            expect![[
                r#"error unable to parse requirement: found '', expected: ',' or ')' (at offset 7 of label selector "a in (x")"#
            ]],
        );
        check(
            "a in (x))",
            expect![[
                r#"error found ')', expected: ',' or 'end of string' (at offset 8 of label selector "a in (x))")"#
            ]],
        );
        check(
            "a=(b)",
            expect![[
                r#"error unable to parse requirement: found '(', expected: identifier (at offset 2 of label selector "a=(b)")"#
            ]],
        );
        check(
            "!a=b",
            expect![[
                r#"error found '=', expected: ',' or 'end of string' (at offset 2 of label selector "!a=b")"#
            ]],
        );
        check(
            "!",
            expect![[
                r#"error unable to parse requirement: found '', expected: identifier (at offset 1 of label selector "!")"#
            ]],
        );
        check(
            "a==b==c",
            expect![[
                r#"error found '==', expected: ',' or 'end of string' (at offset 4 of label selector "a==b==c")"#
            ]],
        );
    }

    #[test]
    fn parse_invalid_keys_and_values() {
        check(
            "-a=b",
            expect![[
                r#"error unable to parse requirement: invalid label key "-a": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#
            ]],
        );
        check(
            "Example.com/a",
            expect![[
                r#"error unable to parse requirement: invalid label key "Example.com/a": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
            ]],
        );
        check(
            "/a",
            expect![[
                r#"error unable to parse requirement: invalid label key "/a": prefix part must be non-empty"#
            ]],
        );
        check(
            "a/",
            expect![[
                r#"error unable to parse requirement: invalid label key "a/": name part must be non-empty; name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#
            ]],
        );
        check(
            "a/b/c",
            expect![[
                r#"error unable to parse requirement: invalid label key "a/b/c": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"#
            ]],
        );
        check(
            &format!("{}=b", "k".repeat(64)),
            expect![[
                r#"error unable to parse requirement: invalid label key "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk": name part must be no more than 63 characters"#
            ]],
        );
        check(
            &format!("{}=b", "k".repeat(63)),
            expect![[
                r#"ok "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk=b" empty=false"#
            ]],
        );
        check(
            "a=b_",
            expect![[
                r#"error unable to parse requirement: invalid label value: "b_": at key: "a": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#
            ]],
        );
        check(
            &format!("a in (x,{})", "v".repeat(64)),
            expect![[
                r#"error unable to parse requirement: invalid label value: "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv": at key: "a": must be no more than 63 characters"#
            ]],
        );
        check(
            "a>x",
            expect![[
                r#"error unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer (key "a")"#
            ]],
        );
        check(
            "é=b",
            expect![[
                r#"error unable to parse requirement: invalid label key "é": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"#
            ]],
        );
        // Non-ASCII right after an operator character must not split a UTF-8 sequence.
        check(
            "a!é",
            expect![[
                r#"error unable to parse requirement: found '!', expected: '=', '!=', '==', 'in', 'notin', '>' or '<' (at offset 1 of label selector "a!é")"#
            ]],
        );
    }

    #[test]
    fn equality_matching() {
        let sets = [json!(null), json!({}), json!({"a": "b"}), json!({"a": "c"}), json!({"a": 1})];
        check_matches(
            &parsed("a=b"),
            &sets,
            expect![[r#"
                null -> false
                {} -> false
                {"a":"b"} -> true
                {"a":"c"} -> false
                {"a":1} -> false"#]],
        );
        check_matches(
            &parsed("a!=b"),
            &sets,
            expect![[r#"
                null -> true
                {} -> true
                {"a":"b"} -> false
                {"a":"c"} -> true
                {"a":1} -> true"#]],
        );
        check_matches(
            &parsed("a="),
            &[json!({}), json!({"a": ""}), json!({"a": "x"})],
            expect![[r#"
                {} -> false
                {"a":""} -> true
                {"a":"x"} -> false"#]],
        );
    }

    #[test]
    fn set_based_matching() {
        let sets = [
            json!(null),
            json!({"a": "x"}),
            json!({"a": "y"}),
            json!({"a": "z"}),
            json!({"b": "x"}),
        ];
        check_matches(
            &parsed("a in (x,y)"),
            &sets,
            expect![[r#"
                null -> false
                {"a":"x"} -> true
                {"a":"y"} -> true
                {"a":"z"} -> false
                {"b":"x"} -> false"#]],
        );
        // `notin` selects objects without the label, as upstream's Requirement.Matches.
        check_matches(
            &parsed("a notin (x,y)"),
            &sets,
            expect![[r#"
                null -> true
                {"a":"x"} -> false
                {"a":"y"} -> false
                {"a":"z"} -> true
                {"b":"x"} -> true"#]],
        );
        check_matches(
            &parsed("a"),
            &sets,
            expect![[r#"
                null -> false
                {"a":"x"} -> true
                {"a":"y"} -> true
                {"a":"z"} -> true
                {"b":"x"} -> false"#]],
        );
        check_matches(
            &parsed("!a"),
            &sets,
            expect![[r#"
                null -> true
                {"a":"x"} -> false
                {"a":"y"} -> false
                {"a":"z"} -> false
                {"b":"x"} -> true"#]],
        );
        check_matches(
            &parsed("a in (x), b notin (y)"),
            &[json!({"a": "x"}), json!({"a": "x", "b": "y"}), json!({"a": "x", "b": "z"})],
            expect![[r#"
                {"a":"x"} -> true
                {"a":"x","b":"y"} -> false
                {"a":"x","b":"z"} -> true"#]],
        );
        check_matches(
            &parsed("n>5,m<0"),
            &[
                json!({"n": "6", "m": "-1"}),
                json!({"n": "5", "m": "-1"}),
                json!({"n": "x", "m": "-1"}),
                json!({"m": "-1"}),
            ],
            expect![[r#"
                {"n":"6","m":"-1"} -> true
                {"n":"5","m":"-1"} -> false
                {"n":"x","m":"-1"} -> false
                {"m":"-1"} -> false"#]],
        );
        check_matches(
            &LabelSelector::default(),
            &[json!(null), json!({"a": "x"})],
            expect![[r#"
                null -> true
                {"a":"x"} -> true"#]],
        );
    }

    #[test]
    fn from_label_selector_forms() {
        check_json(json!(null), expect![[r#"ok "" empty=false"#]]);
        check_json(json!({}), expect![[r#"ok "" empty=true"#]]);
        check_json(
            json!({"matchLabels": null, "matchExpressions": []}),
            expect![[r#"ok "" empty=true"#]],
        );
        check_json(
            json!({"matchLabels": {"z": "1", "app": "web"}, "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["prod"]},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "team", "operator": "Exists", "values": []},
            ]}),
            expect![[
                r#"ok "app=web,!canary,env notin (prod),team,tier in (a,b),z=1" empty=false"#
            ]],
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            expect![[
                r#"error unable to parse requirement: for 'in', 'notin' operators, values set can't be empty (key "a")"#
            ]],
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            expect![[
                r#"error unable to parse requirement: values set must be empty for exists and does not exist (key "a")"#
            ]],
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            expect![[r#"error "Gt" is not a valid label selector operator (key "a")"#]],
        );
        check_json(
            json!({"matchLabels": {"a": "-x"}}),
            expect![[
                r#"error unable to parse requirement: invalid label value: "-x": at key: "a": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#
            ]],
        );
        check_json(
            json!({"matchLabels": {"a": 1}}),
            expect![[r#"error invalid label selector: matchLabels[a]: must be a string"#]],
        );
        check_json(
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]}),
            expect![[
                r#"error invalid label selector: matchExpressions[0].values: must be an array"#
            ]],
        );
        check_json(
            json!("app=web"),
            expect![[r#"error invalid label selector: selector: must be an object"#]],
        );
    }

    #[test]
    fn from_label_selector_matching() {
        let sel = LabelSelector::from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}],
        }))
        .expect("valid selector");
        check_matches(
            &sel,
            &[json!({"app": "web"}), json!({"app": "web", "env": "prod"}), json!({"app": "db"})],
            expect![[r#"
                {"app":"web"} -> true
                {"app":"web","env":"prod"} -> false
                {"app":"db"} -> false"#]],
        );
        // `null` is upstream's Nothing(): it selects no object at all.
        let nothing = LabelSelector::from_label_selector(&Value::Null).expect("null is valid");
        check_matches(
            &nothing,
            &[json!(null), json!({"app": "web"})],
            expect![[r#"
                null -> false
                {"app":"web"} -> false"#]],
        );
    }

    #[test]
    fn field_selector_parse() {
        check_field("", expect![[r#"ok "" fields=[] empty=true"#]]);
        check_field(
            "metadata.name=a,spec.nodeName!=",
            expect![[
                r#"ok "metadata.name=a,spec.nodeName!=" fields=["metadata.name", "spec.nodeName"] empty=false"#
            ]],
        );
        check_field(
            "status.phase==Running,,metadata.namespace=default",
            expect![[
                r#"ok "metadata.namespace=default,status.phase=Running" fields=["metadata.namespace", "status.phase"] empty=false"#
            ]],
        );
        check_field(
            r"metadata.name=a\,b\=c\\d",
            expect![[r#"ok "metadata.name=a\\,b\\=c\\\\d" fields=["metadata.name"] empty=false"#]],
        );
        check_field(
            "a!==b",
            expect![[
                r#"error invalid field selector: unescaped character in value: '=' in 'a!==b'"#
            ]],
        );
        check_field(
            "a=b=c",
            expect![[
                r#"error invalid field selector: unescaped character in value: '=' in 'a=b=c'"#
            ]],
        );
        check_field(
            r"a=b\x",
            expect![[r#"error invalid field selector: invalid escape sequence: \x in 'a=b\x'"#]],
        );
        check_field(
            r"a=b\",
            expect![[r#"error invalid field selector: invalid escape sequence: \ in 'a=b\'"#]],
        );
        check_field(
            "a=b,status.phase",
            expect![[
                r#"error invalid field selector: 'a=b,status.phase'; can't understand 'status.phase'"#
            ]],
        );
    }

    #[test]
    fn field_selector_escaped_value_round_trips() {
        let s = FieldSelector::parse(r"metadata.name=a\,b").expect("valid");
        check_field_matches(
            &s.to_string(),
            &[json!({"metadata": {"name": "a,b"}}), json!({"metadata": {"name": r"a\,b"}})],
            expect![[r#"
                {"metadata":{"name":"a,b"}} -> true
                {"metadata":{"name":"a\\,b"}} -> false"#]],
        );
    }

    #[test]
    fn field_selector_matching() {
        let objects = [
            json!({"metadata": {"name": "p1"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "p2"}, "spec": {}, "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "p3"}, "spec": {"nodeName": null}}),
        ];
        check_field_matches(
            "spec.nodeName=",
            &objects,
            expect![[r#"
                {"metadata":{"name":"p1"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}} -> false
                {"metadata":{"name":"p2"},"spec":{},"status":{"phase":"Pending"}} -> true
                {"metadata":{"name":"p3"},"spec":{"nodeName":null}} -> true"#]],
        );
        check_field_matches(
            "status.phase!=Running,metadata.name!=p3",
            &objects,
            expect![[r#"
                {"metadata":{"name":"p1"},"spec":{"nodeName":"n1"},"status":{"phase":"Running"}} -> false
                {"metadata":{"name":"p2"},"spec":{},"status":{"phase":"Pending"}} -> true
                {"metadata":{"name":"p3"},"spec":{"nodeName":null}} -> false"#]],
        );
        check_field_matches(
            "involvedObject.kind=Pod,type=Warning,count=3,spec.unschedulable=true",
            &[
                json!({"involvedObject": {"kind": "Pod"}, "type": "Warning", "count": 3, "spec": {"unschedulable": true}}),
                json!({"involvedObject": {"kind": "Pod"}, "type": "Normal", "count": 3, "spec": {"unschedulable": true}}),
            ],
            expect![[r#"
                {"involvedObject":{"kind":"Pod"},"type":"Warning","count":3,"spec":{"unschedulable":true}} -> true
                {"involvedObject":{"kind":"Pod"},"type":"Normal","count":3,"spec":{"unschedulable":true}} -> false"#]],
        );
    }

    #[test]
    fn field_selector_exact_match() {
        let s = FieldSelector::parse("metadata.name==a,metadata.namespace!=b").expect("valid");
        assert_eq!(s.requires_exact_match("metadata.name"), Some("a"));
        assert_eq!(s.requires_exact_match("metadata.namespace"), None);
    }
}
