//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths (§3.5.2, §3.10):
//! a tokenizer, a recursive-descent parser that resolves every attribute
//! against the schemas at parse time (so type errors and unknown attributes
//! are reported before anything is read), and an evaluator over a resource's
//! JSON.
//!
//! Precedence: `not` binds tighter than `and`, which binds tighter than `or`.
//! Operators and attribute names are case-insensitive. String comparisons
//! follow each attribute's `caseExact`: `userName`, `displayName` and
//! `emails.value` ignore case, `id`, `externalId` and `members.value` don't.
//! `ne` is the negation of `eq` (a missing attribute is "not equal");
//! `eq null` means "not present".

use chrono::{DateTime, FixedOffset};
use serde_json::{Map, Value};

use crate::schema::{find, Attr, Kind, Schema, Ty};

/// Longest filter accepted, in bytes.
pub(crate) const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and brackets.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("'{w}'"),
            Tok::Str(s) => format!("string \"{s}\""),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'[' => {
                out.push(Tok::LBracket);
                i += 1;
            }
            b']' => {
                out.push(Tok::RBracket);
                i += 1;
            }
            b'(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' => i += 2,
                        b'"' => {
                            closed = true;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                if !closed || i >= bytes.len() {
                    return Err(format!("unterminated string starting at offset {start}"));
                }
                let raw = src
                    .get(start..=i)
                    .ok_or_else(|| format!("invalid string at offset {start}"))?;
                let s: String = serde_json::from_str(raw)
                    .map_err(|e| format!("invalid string at offset {start}: {e}"))?;
                out.push(Tok::Str(s));
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\t' | b'\r' | b'\n' | b'[' | b']' | b'(' | b')' | b'"'
                    )
                {
                    i += 1;
                }
                let w = src
                    .get(start..i)
                    .ok_or_else(|| format!("invalid text at offset {start}"))?;
                out.push(Tok::Word(w.to_string()));
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn parse(w: &str) -> Option<CmpOp> {
        Some(match w.to_ascii_lowercase().as_str() {
            "eq" => CmpOp::Eq,
            "ne" => CmpOp::Ne,
            "co" => CmpOp::Co,
            "sw" => CmpOp::Sw,
            "ew" => CmpOp::Ew,
            "gt" => CmpOp::Gt,
            "ge" => CmpOp::Ge,
            "lt" => CmpOp::Lt,
            "le" => CmpOp::Le,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Co => "co",
            CmpOp::Sw => "sw",
            CmpOp::Ew => "ew",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
        }
    }
    fn ordering(self) -> bool {
        matches!(self, CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Present,
    Cmp(CmpOp, Lit),
}

/// One attribute test: `[urn:]attr[.sub] op value`, `attr[filter].sub op
/// value`, or `… pr`.
#[derive(Debug, Clone)]
pub(crate) struct Test {
    /// The extension URN holding the attribute, or None for the object itself.
    pub ext: Option<&'static str>,
    pub attr: &'static Attr,
    pub value_filter: Option<Box<Filter>>,
    pub sub: Option<&'static Attr>,
    pub cond: Cond,
}

#[derive(Debug, Clone)]
pub(crate) enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Test(Test),
    /// `attr[filter]`: some value of the (complex) attribute matches.
    ValuePath {
        ext: Option<&'static str>,
        attr: &'static Attr,
        filter: Box<Filter>,
    },
}

/// A known attribute or one of an extension schema this server does not know.
#[derive(Debug, Clone)]
pub(crate) enum AttrName {
    Known {
        ext: Option<&'static Schema>,
        attr: &'static Attr,
    },
    Custom {
        urn: String,
        name: String,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum SubName {
    Known(&'static Attr),
    Custom(String),
}

impl SubName {
    pub fn name(&self) -> &str {
        match self {
            SubName::Known(a) => a.name,
            SubName::Custom(s) => s,
        }
    }
}

/// An attribute path without a value filter: `[urn:]attr[.sub]`, or the
/// bare URN of a known extension.
#[derive(Debug, Clone)]
pub(crate) enum SimplePath {
    Extension(&'static Schema),
    Attr {
        name: AttrName,
        sub: Option<SubName>,
    },
}

/// Resolves `[urn:]attr[.sub]` for `kind`. With `allow_custom`, attributes
/// of unknown extension URNs are accepted as [`AttrName::Custom`].
pub(crate) fn resolve(kind: Kind, text: &str, allow_custom: bool) -> Result<SimplePath, String> {
    if text.is_empty() {
        return Err("empty attribute path".into());
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("urn:") {
        let core = kind.core();
        for schema in std::iter::once(core).chain(kind.extensions().iter().copied()) {
            let id = schema.id.to_ascii_lowercase();
            if lower == id {
                if std::ptr::eq(schema, core) {
                    return Err(format!("'{text}' names a schema, not an attribute"));
                }
                return Ok(SimplePath::Extension(schema));
            }
            if lower.starts_with(&id) && lower.as_bytes().get(id.len()) == Some(&b':') {
                let rest = text.get(id.len() + 1..).unwrap_or_default();
                let ext = (!std::ptr::eq(schema, core)).then_some(schema);
                return resolve_in(kind, ext, schema.attrs, rest, text);
            }
        }
        if !allow_custom {
            return Err(format!("unknown schema in attribute '{text}'"));
        }
        let (urn, rest) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid attribute path '{text}'"))?;
        if rest.is_empty() {
            return Err(format!("invalid attribute path '{text}'"));
        }
        let (name, sub) = split_sub(rest, text)?;
        return Ok(SimplePath::Attr {
            name: AttrName::Custom {
                urn: urn.to_string(),
                name: name.to_string(),
            },
            sub: sub.map(|s| SubName::Custom(s.to_string())),
        });
    }
    resolve_in(kind, None, kind.core().attrs, text, text)
}

fn split_sub<'a>(rest: &'a str, full: &str) -> Result<(&'a str, Option<&'a str>), String> {
    let mut parts = rest.split('.');
    let name = parts.next().unwrap_or_default();
    let sub = parts.next();
    if parts.next().is_some() || name.is_empty() || sub.is_some_and(str::is_empty) {
        return Err(format!("invalid attribute path '{full}'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
    {
        return Err(format!("invalid attribute name in '{full}'"));
    }
    Ok((name, sub))
}

fn resolve_in(
    kind: Kind,
    ext: Option<&'static Schema>,
    attrs: &'static [Attr],
    rest: &str,
    full: &str,
) -> Result<SimplePath, String> {
    let (name, sub) = split_sub(rest, full)?;
    let attr = match ext {
        Some(_) => find(attrs, name),
        None => kind.core_attr(name),
    }
    .ok_or_else(|| format!("unknown attribute '{full}'"))?;
    let sub = match sub {
        None => None,
        Some(s) => {
            if attr.ty != Ty::Complex {
                return Err(format!("'{}' has no sub-attributes ('{full}')", attr.name));
            }
            Some(SubName::Known(
                attr.sub_attr(s)
                    .ok_or_else(|| format!("unknown sub-attribute '{full}'"))?,
            ))
        }
    };
    Ok(SimplePath::Attr {
        name: AttrName::Known { ext, attr },
        sub,
    })
}

#[derive(Clone, Copy)]
enum Scope {
    Resource(Kind),
    Within(&'static Attr),
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }
    fn expect(&mut self, want: Tok) -> Result<(), String> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(format!(
                "expected {} but found {}",
                want.describe(),
                t.describe()
            )),
            None => Err(format!("expected {} but the filter ended", want.describe())),
        }
    }
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("filter is nested too deeply".into());
        }
        Ok(())
    }

    fn or_expr(&mut self, scope: Scope) -> Result<Filter, String> {
        let mut left = self.and_expr(scope)?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.and_expr(scope)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self, scope: Scope) -> Result<Filter, String> {
        let mut left = self.unary(scope)?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.unary(scope)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self, scope: Scope) -> Result<Filter, String> {
        if self.peek_keyword("not") && self.toks.get(self.pos + 1) == Some(&Tok::LParen) {
            self.pos += 2;
            self.enter()?;
            let inner = self.or_expr(scope)?;
            self.expect(Tok::RParen)?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            self.enter()?;
            let inner = self.or_expr(scope)?;
            self.expect(Tok::RParen)?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.atom(scope)
    }

    fn atom(&mut self, scope: Scope) -> Result<Filter, String> {
        let word = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(t) => return Err(format!("expected an attribute but found {}", t.describe())),
            None => return Err("expected an attribute but the filter ended".into()),
        };
        let (ext, attr, mut sub) = match scope {
            Scope::Within(parent) => {
                if word.contains('.') || word.contains(':') {
                    return Err(format!(
                        "'{word}' inside '{}[…]' must name a sub-attribute of '{}'",
                        parent.name, parent.name
                    ));
                }
                let a = parent
                    .sub_attr(&word)
                    .ok_or_else(|| format!("unknown sub-attribute '{}.{word}'", parent.name))?;
                (None, a, None)
            }
            Scope::Resource(kind) => match resolve(kind, &word, false)? {
                SimplePath::Extension(s) => {
                    return Err(format!("'{}' names a schema, not an attribute", s.id))
                }
                SimplePath::Attr {
                    name: AttrName::Known { ext, attr },
                    sub,
                } => (
                    ext.map(|s| s.id),
                    attr,
                    match sub {
                        Some(SubName::Known(a)) => Some(a),
                        _ => None,
                    },
                ),
                SimplePath::Attr { .. } => return Err(format!("unknown attribute '{word}'")),
            },
        };
        let mut value_filter = None;
        if self.peek() == Some(&Tok::LBracket) {
            if matches!(scope, Scope::Within(_)) {
                return Err("value filters cannot be nested".into());
            }
            if sub.is_some() || attr.ty != Ty::Complex {
                return Err(format!(
                    "'{word}' is not a complex attribute and cannot take a value filter"
                ));
            }
            self.pos += 1;
            self.enter()?;
            let inner = self.or_expr(Scope::Within(attr))?;
            self.expect(Tok::RBracket)?;
            self.depth -= 1;
            // `attr[filter].sub op value` (an extension of the RFC grammar,
            // borrowed from PATCH paths) or the plain value path.
            match self.peek() {
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    let name = w.trim_start_matches('.').to_string();
                    self.pos += 1;
                    sub =
                        Some(attr.sub_attr(&name).ok_or_else(|| {
                            format!("unknown sub-attribute '{}.{name}'", attr.name)
                        })?);
                    value_filter = Some(Box::new(inner));
                }
                _ => {
                    return Ok(Filter::ValuePath {
                        ext,
                        attr,
                        filter: Box::new(inner),
                    })
                }
            }
        }
        let op_word = match self.next() {
            Some(Tok::Word(w)) => w,
            Some(t) => {
                return Err(format!(
                    "expected an operator after '{word}' but found {}",
                    t.describe()
                ))
            }
            None => return Err(format!("expected an operator after '{word}'")),
        };
        let leaf = leaf_attr(attr, sub).ok_or_else(|| {
            format!("'{word}' is a complex attribute: compare one of its sub-attributes")
        })?;
        let cond = if op_word.eq_ignore_ascii_case("pr") {
            Cond::Present
        } else {
            let op = CmpOp::parse(&op_word)
                .ok_or_else(|| format!("unknown operator '{op_word}' after '{word}'"))?;
            let lit = match self.next() {
                Some(Tok::Str(s)) => Lit::Str(s),
                Some(Tok::Word(w)) => parse_word_literal(&w)
                    .ok_or_else(|| format!("invalid value '{w}' after '{word} {op_word}'"))?,
                Some(t) => {
                    return Err(format!(
                        "expected a value after '{word} {op_word}' but found {}",
                        t.describe()
                    ))
                }
                None => return Err(format!("expected a value after '{word} {op_word}'")),
            };
            let lit = check_literal(leaf, op, lit, &word)?;
            Cond::Cmp(op, lit)
        };
        Ok(Filter::Test(Test {
            ext,
            attr,
            value_filter,
            sub,
            cond,
        }))
    }
}

fn parse_word_literal(w: &str) -> Option<Lit> {
    match w.to_ascii_lowercase().as_str() {
        "true" => return Some(Lit::Bool(true)),
        "false" => return Some(Lit::Bool(false)),
        "null" => return Some(Lit::Null),
        _ => {}
    }
    let first = w.chars().next()?;
    if first.is_ascii_digit() || first == '-' {
        return w
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Lit::Num);
    }
    None
}

/// The attribute whose values a test compares: the sub-attribute, the
/// attribute itself when simple, or the `value` sub-attribute of a complex one.
fn leaf_attr(attr: &'static Attr, sub: Option<&'static Attr>) -> Option<&'static Attr> {
    match sub {
        Some(s) => Some(s),
        None if attr.ty == Ty::Complex => attr.sub_attr("value"),
        None => Some(attr),
    }
}

fn check_literal(leaf: &Attr, op: CmpOp, lit: Lit, word: &str) -> Result<Lit, String> {
    let bad_op = || {
        Err(format!(
            "operator '{}' is not supported for the {} attribute '{word}'",
            op.name(),
            ty_name(leaf.ty)
        ))
    };
    if lit == Lit::Null {
        return match op {
            CmpOp::Eq | CmpOp::Ne => Ok(Lit::Null),
            _ => Err(format!(
                "'{word} {} null' is not a valid comparison",
                op.name()
            )),
        };
    }
    match leaf.ty {
        Ty::String | Ty::Reference | Ty::Binary => match lit {
            Lit::Str(_) => Ok(lit),
            _ => Err(format!(
                "'{word}' is a string: compare it with a quoted string"
            )),
        },
        Ty::Boolean => {
            if !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return bad_op();
            }
            match lit {
                Lit::Bool(_) => Ok(lit),
                Lit::Str(s) if s.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
                Lit::Str(s) if s.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
                _ => Err(format!(
                    "'{word}' is a boolean: compare it with true or false"
                )),
            }
        }
        Ty::Integer | Ty::Decimal => {
            if matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew) {
                return bad_op();
            }
            match lit {
                Lit::Num(_) => Ok(lit),
                _ => Err(format!("'{word}' is a number: compare it with a number")),
            }
        }
        Ty::DateTime => {
            if matches!(op, CmpOp::Co | CmpOp::Sw | CmpOp::Ew) {
                return bad_op();
            }
            match &lit {
                Lit::Str(s) if DateTime::parse_from_rfc3339(s).is_ok() => Ok(lit),
                _ => Err(format!(
                    "'{word}' is a dateTime: compare it with a quoted RFC 3339 timestamp"
                )),
            }
        }
        Ty::Complex => bad_op(),
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::String => "string",
        Ty::Boolean => "boolean",
        Ty::Decimal => "decimal",
        Ty::Integer => "integer",
        Ty::DateTime => "dateTime",
        Ty::Binary => "binary",
        Ty::Reference => "reference",
        Ty::Complex => "complex",
    }
}

/// Parses a `filter` query parameter for resources of `kind`.
pub(crate) fn parse(kind: Kind, src: &str) -> Result<Filter, String> {
    if src.len() > MAX_FILTER_LEN {
        return Err(format!("filter longer than {MAX_FILTER_LEN} bytes"));
    }
    let toks = lex(src)?;
    if toks.is_empty() {
        return Err("empty filter".into());
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let f = p.or_expr(Scope::Resource(kind))?;
    if let Some(t) = p.peek() {
        return Err(format!(
            "unexpected {} after a complete filter",
            t.describe()
        ));
    }
    Ok(f)
}

/// A PATCH `path` (RFC 7644 §3.5.2): `attrPath`, `valuePath` or
/// `valuePath.subAttr`.
#[derive(Debug, Clone)]
pub(crate) enum PatchPath {
    Extension(&'static Schema),
    Attr {
        name: AttrName,
        sub: Option<SubName>,
        filter: Option<Filter>,
    },
}

/// Why a PATCH path was refused: the path itself, or the filter inside it.
#[derive(Debug)]
pub(crate) enum PathError {
    Path(String),
    Filter(String),
}

pub(crate) fn parse_patch_path(kind: Kind, src: &str) -> Result<PatchPath, PathError> {
    if src.len() > MAX_FILTER_LEN {
        return Err(PathError::Path(format!(
            "path longer than {MAX_FILTER_LEN} bytes"
        )));
    }
    let toks = lex(src).map_err(PathError::Path)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let word = match p.next() {
        Some(Tok::Word(w)) => w,
        _ => return Err(PathError::Path(format!("invalid path '{src}'"))),
    };
    let simple = resolve(kind, &word, true).map_err(PathError::Path)?;
    if p.peek().is_none() {
        return Ok(match simple {
            SimplePath::Extension(s) => PatchPath::Extension(s),
            SimplePath::Attr { name, sub } => PatchPath::Attr {
                name,
                sub,
                filter: None,
            },
        });
    }
    let (ext, attr) = match simple {
        SimplePath::Attr {
            name: AttrName::Known { ext, attr },
            sub: None,
        } if attr.ty == Ty::Complex && attr.multi => (ext, attr),
        _ => {
            return Err(PathError::Path(format!(
                "'{word}' is not a multi-valued complex attribute and cannot take a value filter"
            )))
        }
    };
    if p.next() != Some(Tok::LBracket) {
        return Err(PathError::Path(format!("invalid path '{src}'")));
    }
    let filter = p.or_expr(Scope::Within(attr)).map_err(PathError::Filter)?;
    p.expect(Tok::RBracket).map_err(PathError::Filter)?;
    let sub = match p.next() {
        None => None,
        Some(Tok::Word(w)) if w.starts_with('.') && p.peek().is_none() => {
            let name = w.trim_start_matches('.');
            Some(SubName::Known(attr.sub_attr(name).ok_or_else(|| {
                PathError::Path(format!("unknown sub-attribute '{}.{name}'", attr.name))
            })?))
        }
        Some(_) => return Err(PathError::Path(format!("invalid path '{src}'"))),
    };
    Ok(PatchPath::Attr {
        name: AttrName::Known { ext, attr },
        sub,
        filter: Some(filter),
    })
}

/// Looks `key` up exactly, then ignoring ASCII case.
pub(crate) fn get_ci<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The key of `m` equal to `key` ignoring ASCII case, if any.
pub(crate) fn key_ci(m: &Map<String, Value>, key: &str) -> Option<String> {
    if m.contains_key(key) {
        return Some(key.to_string());
    }
    m.keys().find(|k| k.eq_ignore_ascii_case(key)).cloned()
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => a.iter().any(present),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

impl Filter {
    /// Whether the resource (or, inside a value filter, the complex value)
    /// `obj` matches.
    pub fn matches(&self, obj: &Map<String, Value>) -> bool {
        match self {
            Filter::And(a, b) => a.matches(obj) && b.matches(obj),
            Filter::Or(a, b) => a.matches(obj) || b.matches(obj),
            Filter::Not(a) => !a.matches(obj),
            Filter::ValuePath { ext, attr, filter } => container(obj, *ext)
                .and_then(|c| get_ci(c, attr.name))
                .is_some_and(|v| {
                    elements(v).any(|el| el.as_object().is_some_and(|o| filter.matches(o)))
                }),
            Filter::Test(t) => t.matches(obj),
        }
    }

    /// Whether the filter reads `attr` (a core attribute name) anywhere.
    pub fn mentions(&self, name: &str) -> bool {
        match self {
            Filter::And(a, b) | Filter::Or(a, b) => a.mentions(name) || b.mentions(name),
            Filter::Not(a) => a.mentions(name),
            Filter::ValuePath { ext, attr, .. } => ext.is_none() && attr.name == name,
            Filter::Test(t) => t.ext.is_none() && t.attr.name == name,
        }
    }

    /// A conjunct that an index can answer, to narrow the candidates before
    /// the whole filter is evaluated.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Filter::And(a, b) => a.hint().or_else(|| b.hint()),
            Filter::Test(Test {
                ext: None,
                attr,
                value_filter: None,
                sub,
                cond: Cond::Cmp(CmpOp::Eq, Lit::Str(s)),
            }) => match (attr.name, sub.map(|a| a.name)) {
                ("userName", None) => Some(Hint::UserName(s.clone())),
                ("externalId", None) => Some(Hint::ExternalId(s.clone())),
                ("id", None) => Some(Hint::Id(s.clone())),
                ("displayName", None) => Some(Hint::DisplayName(s.clone())),
                ("members", None | Some("value")) => Some(Hint::Member(s.clone())),
                _ => None,
            },
            Filter::ValuePath {
                ext: None,
                attr,
                filter,
            } if attr.name == "members" => match filter.as_ref() {
                Filter::Test(Test {
                    attr: sub,
                    cond: Cond::Cmp(CmpOp::Eq, Lit::Str(s)),
                    ..
                }) if sub.name == "value" => Some(Hint::Member(s.clone())),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What an index can look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hint {
    UserName(String),
    ExternalId(String),
    Id(String),
    DisplayName(String),
    Member(String),
}

fn container<'a>(obj: &'a Map<String, Value>, ext: Option<&str>) -> Option<&'a Map<String, Value>> {
    match ext {
        None => Some(obj),
        Some(urn) => get_ci(obj, urn).and_then(Value::as_object),
    }
}

fn elements(v: &Value) -> Box<dyn Iterator<Item = &Value> + '_> {
    match v {
        Value::Array(a) => Box::new(a.iter()),
        other => Box::new(std::iter::once(other)),
    }
}

impl Test {
    fn values<'a>(&self, obj: &'a Map<String, Value>) -> Vec<&'a Value> {
        let Some(v) = container(obj, self.ext).and_then(|c| get_ci(c, self.attr.name)) else {
            return Vec::new();
        };
        let leaf_name = match self.sub {
            Some(s) => Some(s.name),
            None if self.attr.ty == Ty::Complex => Some("value"),
            None => None,
        };
        elements(v)
            .filter(|el| match &self.value_filter {
                None => true,
                Some(f) => el.as_object().is_some_and(|o| f.matches(o)),
            })
            .filter_map(|el| match leaf_name {
                None => Some(el),
                Some(n) => el.as_object().and_then(|o| get_ci(o, n)),
            })
            .flat_map(elements)
            .filter(|v| !v.is_null())
            .collect()
    }

    fn matches(&self, obj: &Map<String, Value>) -> bool {
        let values = self.values(obj);
        let Some(leaf) = leaf_attr(self.attr, self.sub) else {
            return false;
        };
        match &self.cond {
            Cond::Present => values.iter().any(|v| present(v)),
            Cond::Cmp(CmpOp::Eq, Lit::Null) => !values.iter().any(|v| present(v)),
            Cond::Cmp(CmpOp::Ne, Lit::Null) => values.iter().any(|v| present(v)),
            Cond::Cmp(CmpOp::Ne, lit) => !values.iter().any(|v| compare(v, CmpOp::Eq, lit, leaf)),
            Cond::Cmp(op, lit) => values.iter().any(|v| compare(v, *op, lit, leaf)),
        }
    }
}

fn compare(v: &Value, op: CmpOp, lit: &Lit, leaf: &Attr) -> bool {
    match (leaf.ty, lit) {
        (Ty::Boolean, Lit::Bool(b)) => v.as_bool() == Some(*b),
        (Ty::Integer | Ty::Decimal, Lit::Num(n)) => v
            .as_f64()
            .and_then(|x| x.partial_cmp(n))
            .is_some_and(|o| ordering_holds(op, o)),
        (Ty::DateTime, Lit::Str(s)) => {
            let (Some(a), Ok(b)) = (
                v.as_str()
                    .and_then(|x| DateTime::parse_from_rfc3339(x).ok()),
                DateTime::parse_from_rfc3339(s),
            ) else {
                return false;
            };
            ordering_holds(op, instant(a).cmp(&instant(b)))
        }
        (_, Lit::Str(s)) => {
            let Some(x) = v.as_str() else { return false };
            let (x, s) = if leaf.case_exact {
                (x.to_string(), s.clone())
            } else {
                (x.to_lowercase(), s.to_lowercase())
            };
            match op {
                CmpOp::Eq => x == s,
                CmpOp::Ne => x != s,
                CmpOp::Co => x.contains(&s),
                CmpOp::Sw => x.starts_with(&s),
                CmpOp::Ew => x.ends_with(&s),
                _ => ordering_holds(op, x.cmp(&s)),
            }
        }
        _ => false,
    }
}

fn instant(d: DateTime<FixedOffset>) -> DateTime<chrono::Utc> {
    d.with_timezone(&chrono::Utc)
}

fn ordering_holds(op: CmpOp, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        CmpOp::Eq => o == Equal,
        CmpOp::Ne => o != Equal,
        CmpOp::Gt => o == Greater,
        CmpOp::Ge => o != Less,
        CmpOp::Lt => o == Less,
        CmpOp::Le => o != Greater,
        _ => {
            debug_assert!(!op.ordering());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Map<String, Value> {
        json!({
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "Ext-1",
            "userName": "Bjensen@Example.com",
            "displayName": "Babs Jensen",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "employeeNumber": "701984",
                "manager": {"value": "m-1"}
            },
            "meta": {"lastModified": "2024-05-01T10:00:00Z", "created": "2024-01-01T00:00:00Z"}
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    fn check(src: &str) -> bool {
        match parse(Kind::User, src) {
            Ok(f) => f.matches(&user()),
            Err(e) => panic!("{src}: {e}"),
        }
    }

    #[test]
    fn comparisons_follow_case_exactness() {
        assert!(check(r#"userName eq "bjensen@example.com""#));
        assert!(check(r#"USERNAME Eq "BJENSEN@EXAMPLE.COM""#));
        assert!(check(r#"externalId eq "Ext-1""#));
        assert!(!check(r#"externalId eq "ext-1""#));
        assert!(!check(r#"id eq "2819C223-7F76-453A-919D-413861904646""#));
        assert!(check(r#"displayName co "jens""#));
        assert!(check(r#"displayName sw "babs""#));
        assert!(check(r#"displayName ew "SEN""#));
        assert!(check(r#"userName ne "x""#));
        assert!(!check(r#"title eq "x""#));
        assert!(check(r#"title ne "x""#));
        assert!(check(r#"title eq null"#));
    }

    #[test]
    fn logic_and_precedence() {
        assert!(check(
            r#"userName eq "x" or displayName co "babs" and active eq true"#
        ));
        assert!(!check(
            r#"(userName eq "x" or displayName co "babs") and active eq false"#
        ));
        assert!(check(r#"not(active eq false)"#));
        assert!(check(r#"not (userName eq "x") and not(title pr)"#));
        assert!(!check(r#"not(userName pr)"#));
    }

    #[test]
    fn multi_valued_and_value_paths() {
        assert!(check(r#"emails.value eq "BABS@jensen.org""#));
        assert!(check(r#"emails eq "babs@jensen.org""#));
        assert!(check(r#"emails[type eq "work" and value co "example"]"#));
        assert!(!check(r#"emails[type eq "home" and value co "example"]"#));
        assert!(check(
            r#"emails[type eq "work"].value eq "bjensen@example.com""#
        ));
        assert!(!check(
            r#"emails[type eq "home"].value eq "bjensen@example.com""#
        ));
        assert!(check(r#"emails[primary eq true].value sw "bjensen""#));
        assert!(check(r#"emails pr"#));
        assert!(!check(r#"phoneNumbers pr"#));
    }

    #[test]
    fn extension_attributes_and_dates() {
        assert!(check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "701984""#
        ));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m-1""#
        ));
        assert!(check(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName sw "bj""#
        ));
        assert!(check(r#"meta.lastModified gt "2024-04-30T23:59:59+02:00""#));
        assert!(!check(r#"meta.lastModified lt "2024-05-01T10:00:00Z""#));
        assert!(check(r#"meta.lastModified ge "2024-05-01T10:00:00Z""#));
    }

    #[test]
    fn errors_are_reported() {
        for bad in [
            "",
            "userName",
            "userName eq",
            r#"userName eq "x" and"#,
            r#"userName xx "x""#,
            r#"nosuch eq "x""#,
            r#"name.nosuch eq "x""#,
            r#"userName eq "x"#,
            r#"(userName eq "x""#,
            r#"userName eq "x")"#,
            r#"active eq "maybe""#,
            r#"active gt true"#,
            r#"userName eq 12"#,
            r#"name eq "x""#,
            r#"emails[type eq "work""#,
            r#"emails[nosuch eq "work"]"#,
            r#"userName[type eq "x"]"#,
            r#"meta.created gt "yesterday""#,
            r#"urn:example:unknown:attr eq "x""#,
            r#"members eq "x""#,
            r#"userName eq "a" "b""#,
        ] {
            assert!(parse(Kind::User, bad).is_err(), "{bad:?} should not parse");
        }
        let deep = format!("{}userName pr{}", "(".repeat(100), ")".repeat(100));
        assert!(parse(Kind::User, &deep).is_err());
    }

    #[test]
    fn hints_find_indexed_conjuncts() {
        let f = parse(Kind::User, r#"active eq true and userName eq "A""#).expect("parse");
        assert_eq!(f.hint(), Some(Hint::UserName("A".into())));
        let f = parse(Kind::User, r#"userName eq "A" or externalId eq "b""#).expect("parse");
        assert_eq!(f.hint(), None);
        let f = parse(Kind::Group, r#"members[value eq "u1"]"#).expect("parse");
        assert_eq!(f.hint(), Some(Hint::Member("u1".into())));
        let f = parse(Kind::Group, r#"members.value eq "u1""#).expect("parse");
        assert_eq!(f.hint(), Some(Hint::Member("u1".into())));
    }

    #[test]
    fn patch_paths() {
        assert!(matches!(
            parse_patch_path(Kind::User, r#"emails[type eq "work"].value"#),
            Ok(PatchPath::Attr {
                sub: Some(_),
                filter: Some(_),
                ..
            })
        ));
        assert!(matches!(
            parse_patch_path(
                Kind::User,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
            ),
            Ok(PatchPath::Extension(_))
        ));
        assert!(matches!(
            parse_patch_path(Kind::User, "urn:example:custom:1.0:User:shoeSize"),
            Ok(PatchPath::Attr {
                name: AttrName::Custom { .. },
                ..
            })
        ));
        assert!(matches!(
            parse_patch_path(Kind::User, "nosuch"),
            Err(PathError::Path(_))
        ));
        assert!(matches!(
            parse_patch_path(Kind::User, r#"emails[type eq ]"#),
            Err(PathError::Filter(_))
        ));
        assert!(matches!(
            parse_patch_path(Kind::User, r#"userName[type eq "x"]"#),
            Err(PathError::Path(_))
        ));
    }

    #[test]
    fn no_panic_on_odd_input() {
        for s in [
            "\"",
            "\\",
            "[",
            "]",
            "(",
            ")",
            "not(",
            "not",
            "a.b.c eq 1",
            "é eq \"ü\"",
            "userName eq \"\\u00\"",
            "emails[",
            "emails[]",
            "emails[type eq \"w\"].",
            "urn:",
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "userName eq -",
        ] {
            let _ = parse(Kind::User, s);
            let _ = parse_patch_path(Kind::User, s);
        }
    }
}
