//! A small condition language over record fields, for `filter`, `route` and `tee`.
//!
//! ```text
//! status >= 400 and client in_cidr ["10.0.0.0/8", "2001:db8::/32"]
//! not (message contains "healthcheck") or path == "/var/log/app.log"
//! message matches "^GET " and user exists
//! level in ["error", "fatal"]
//! ```
//!
//! Grammar, loosest first: `or`, then `and`, then `not`, then one condition or a
//! parenthesised expression. A condition is a field path (`status`, `src.ip`) followed by
//!
//! | operator | operand | true when |
//! |---|---|---|
//! | `==` `!=` | string, number, `true`/`false` | equal / different |
//! | `<` `<=` `>` `>=` | number or string | numbers compare as numbers, text byte-wise |
//! | `contains` | string | text holds the substring, or a list holds an element equal to it |
//! | `matches` | string (a regular expression) | text matches (feature `regex`) |
//! | `in` | list of literals | equal to one of them |
//! | `in_cidr` | list of networks (`"10.0.0.0/8"`, or a bare address) | an IP address (or text that parses as one) inside one of them |
//! | `exists` | — | the field is present (even if null) |
//!
//! Values are compared by kind: numbers (`Int`, `Float`, and text that parses as a number)
//! with number literals; text (`Str`, `Shared`, `Bytes`, byte-wise) with string literals;
//! an IP address equals a string literal that parses as the same address; booleans with
//! `true`/`false`. Any other pairing is false.
//!
//! A comparison that can never hold given what the configuration says a field holds is
//! refused by [`Expr::check_kinds`]; one the data make impossible (a number ordered against
//! a string...) is reported per datum by [`Condition::test_checked`], for the cog to count.
//!
//! **A condition on a missing field is false, `!=` included**: `status != 200` does not
//! keep records without a status. Write `not (status == 200)` to include them.
//!
//! Strings take `"…"` or `'…'`; `\"`, `\'`, `\\`, `\n` and `\t` are escapes and any other
//! backslash is kept, so regular expressions such as `"\d+"` read as written.
//!
//! Everything is parsed and checked once ([`Expr::parse`]): an operand of the wrong kind, an
//! invalid network or regular expression is an error with the column where it is. Nesting
//! (parentheses and `not`) is limited to [`MAX_DEPTH`], so no input can exhaust the stack.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::record::{Path, Record, Value};

/// Deepest nesting of parentheses and `not` that [`Expr::parse`] accepts.
pub const MAX_DEPTH: usize = 64;

/// Why an expression does not parse or type-check, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// 1-based character column in the expression.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ExprError {}

/// A parsed, checked condition; see the [module documentation](self) for the language.
///
/// ```
/// use deadbeat::record::expr::Expr;
/// use deadbeat::record::{Key, Record, Value};
/// let e = Expr::parse(r#"status >= 400 and client in_cidr ["10.0.0.0/8"]"#).unwrap();
/// let mut r = Record::new();
/// r.insert(Key::new("status"), Value::Int(503));
/// r.insert(Key::new("client"), Value::Ip("10.1.2.3".parse().unwrap()));
/// assert!(e.eval(&r));
/// r.insert(Key::new("status"), Value::Int(200));
/// assert!(!e.eval(&r));
/// ```
#[derive(Debug, Clone)]
pub struct Expr {
    root: Node,
    text: String,
}

#[derive(Debug, Clone)]
enum Node {
    // n-ary rather than binary: a long chain of `and`s must not become a deep tree, which
    // evaluation and drop would walk recursively.
    Or(Vec<Node>),
    And(Vec<Node>),
    Not(Box<Node>),
    /// A field, its test, and the column of the test's operand.
    Test(Path, Test, usize),
}

#[derive(Debug, Clone)]
enum Test {
    Exists,
    Cmp(CmpOp, Lit),
    /// The needle's search tables are built once, here, not per datum (boxed: they are
    /// several times the size of the other tests).
    Contains(Box<memchr::memmem::Finder<'static>>),
    #[cfg(feature = "regex")]
    Matches(regex::bytes::Regex),
    In(Vec<Lit>),
    InCidr(Vec<IpNet>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    // The address is parsed once here so that comparing with `Value::Ip` costs nothing.
    Str(String, Option<IpAddr>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Lit {
    fn kind(&self) -> &'static str {
        match self {
            Lit::Str(..) => "a string",
            Lit::Int(_) | Lit::Float(_) => "a number",
            Lit::Bool(_) => "a boolean",
        }
    }
}

impl Expr {
    /// Parses and checks `text`. Never panics; nesting deeper than [`MAX_DEPTH`] is an error.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            pos: 0,
            depth: 0,
            end_column: text.chars().count() + 1,
        };
        let root = p.or()?;
        if let Some(t) = p.peek() {
            return Err(ExprError {
                column: t.column,
                message: format!("expected `and`, `or` or the end, found {}", t.tok),
            });
        }
        Ok(Expr {
            root,
            text: text.to_string(),
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a record satisfies the condition.
    pub fn eval(&self, r: &Record) -> bool {
        self.eval_with(r, |r: &Record, p: &Path| r.get_path(p))
    }

    /// Whether any datum satisfies the condition, reading fields through `get`.
    pub fn eval_with<D, F>(&self, d: &D, get: F) -> bool
    where
        F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value>,
    {
        eval(&self.root, d, &get, &mut None)
    }
}

/// What a field holds, when the configuration makes it known (a parser's declared type, a
/// constant set by `set`), for [`Expr::check_kinds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An integer or a float.
    Number,
    /// `true` or `false`.
    Bool,
}

impl Expr {
    /// Refuses comparisons that can never hold given what the fields are known to hold
    /// (`kind` says, for a field path, or `None` when it cannot be known): a number field
    /// compared with a string (`status >= "400"`), a boolean with a number or a string.
    /// The error names the column of the operand.
    pub fn check_kinds(&self, kind: impl Fn(&Path) -> Option<FieldKind>) -> Result<(), ExprError> {
        let mut stack = vec![&self.root];
        while let Some(n) = stack.pop() {
            match n {
                Node::Or(v) | Node::And(v) => stack.extend(v.iter()),
                Node::Not(n) => stack.push(n),
                Node::Test(path, t, column) => {
                    let Some(k) = kind(path) else {
                        continue;
                    };
                    let lits: &[Lit] = match t {
                        Test::Cmp(_, lit) => std::slice::from_ref(lit),
                        Test::In(lits) => lits,
                        _ => continue,
                    };
                    for lit in lits {
                        if let Some(why) = kind_mismatch(k, lit) {
                            return err(*column, format!("`{path}` {why}"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Why a field of kind `k` can never equal or be ordered with `lit`, if it cannot.
fn kind_mismatch(k: FieldKind, lit: &Lit) -> Option<String> {
    match (k, lit) {
        (FieldKind::Number, Lit::Str(s, _)) => Some(match s.trim().parse::<f64>() {
            Ok(_) => format!(
                "holds numbers here, compared with the string {s:?}: write the number {} \
                 (without quotes)",
                s.trim()
            ),
            Err(_) => format!("holds numbers here, compared with the string {s:?}: never true"),
        }),
        (FieldKind::Number, Lit::Bool(b)) => {
            Some(format!("holds numbers here, compared with {b}: never true"))
        }
        (FieldKind::Bool, Lit::Str(..) | Lit::Int(_) | Lit::Float(_)) => Some(format!(
            "holds true or false here, compared with {}: never true",
            lit.kind()
        )),
        _ => None,
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

type LookupFn<D> = dyn for<'a> Fn(&'a D, &Path) -> Option<&'a Value>;

/// An [`Expr`] bound to a way of reading fields from a datum `D`: what `filter`, `route`
/// and `tee` hold, so they work on any datum.
pub struct Condition<D> {
    expr: Expr,
    get: Box<LookupFn<D>>,
}

impl<D> Condition<D> {
    /// Reads fields of `D` through `get`.
    pub fn new<F>(expr: Expr, get: F) -> Self
    where
        F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + 'static,
    {
        Condition {
            expr,
            get: Box::new(get),
        }
    }

    /// Whether `d` satisfies the condition.
    #[inline]
    pub fn test(&self, d: &D) -> bool {
        eval(&self.expr.root, d, &*self.get, &mut None)
    }

    /// Whether `d` satisfies the condition; `mismatch` receives the first field whose
    /// value could not be compared with its operand (a number with a string, text that is
    /// no number with a number: see [`Mismatch`]), so that the caller counts and logs it.
    /// Such a comparison is false, as in [`test`](Condition::test).
    #[inline]
    pub fn test_checked<'e>(&'e self, d: &D, mismatch: &mut Option<Mismatch<'e>>) -> bool {
        eval(&self.expr.root, d, &*self.get, mismatch)
    }

    /// The expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }
}

/// A comparison that could not be made for one datum ([`Condition::test_checked`]): the
/// field, and what its value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch<'e> {
    /// The field.
    pub field: &'e Path,
    /// What the field held: `"a number"`, `"text"`, `"a boolean"`...
    pub found: &'static str,
    /// What the operand was: `"a string"` or `"a number"`.
    pub wanted: &'static str,
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` held {}, compared with {}: the comparison is false",
            self.field, self.found, self.wanted
        )
    }
}

impl Condition<Record> {
    /// A condition on records, reading fields with [`Record::get_path`].
    pub fn records(expr: Expr) -> Self {
        Condition::new(expr, |r: &Record, p: &Path| r.get_path(p))
    }
}

impl<D> fmt::Debug for Condition<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.expr.text).finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------------

fn eval<'e, D, F>(n: &'e Node, d: &D, get: &F, mismatch: &mut Option<Mismatch<'e>>) -> bool
where
    F: for<'a> Fn(&'a D, &Path) -> Option<&'a Value> + ?Sized,
{
    match n {
        Node::Or(v) => v.iter().any(|n| eval(n, d, get, mismatch)),
        Node::And(v) => v.iter().all(|n| eval(n, d, get, mismatch)),
        Node::Not(n) => !eval(n, d, get, mismatch),
        Node::Test(path, t, _) => match get(d, path) {
            None => false,
            Some(v) => {
                let r = test(t, v);
                if !r && mismatch.is_none() {
                    *mismatch = mismatched(t, v).map(|(found, wanted)| Mismatch {
                        field: path,
                        found,
                        wanted,
                    });
                }
                r
            }
        },
    }
}

/// For a comparison that was false: whether it was so because value and operand are of
/// kinds that do not compare, as `(found, wanted)`. Ordering compares a number with a
/// string; equality too when the string is written as a number (`status == "404"`), but
/// not otherwise, so that `bytes != "-"` on a field holding numbers or `-` is no mistake.
fn mismatched(t: &Test, v: &Value) -> Option<(&'static str, &'static str)> {
    let is_num = matches!(v, Value::Int(_) | Value::Float(_));
    let found = || match v {
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Ip(_) => "an IP address",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        Value::Null => "null",
        _ => "text",
    };
    let numeric_str = |s: &str| s.trim().parse::<f64>().is_ok();
    match t {
        Test::Cmp(op, lit) => {
            let ordering = !matches!(op, CmpOp::Eq | CmpOp::Ne);
            match lit {
                Lit::Str(s, None) if is_num && (ordering || numeric_str(s)) => {
                    Some(("a number", "a string"))
                }
                Lit::Int(_) | Lit::Float(_)
                    if ordering && !matches!(v, Value::Null) && number(v).is_none() =>
                {
                    Some((found(), "a number"))
                }
                _ => None,
            }
        }
        Test::In(lits) if is_num => lits
            .iter()
            .any(|l| matches!(l, Lit::Str(s, None) if numeric_str(s)))
            .then_some(("a number", "a string")),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Str(s) => Some(s.as_bytes()),
        Value::Shared(s) => Some(s.as_bytes()),
        Value::Bytes(b) => Some(b),
        _ => None,
    }
}

fn number(v: &Value) -> Option<Num> {
    match v {
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Float(f) => Some(Num::Float(*f)),
        // Beyond i64: compared by its nearest float, exact enough to order it.
        Value::BigInt(s) => s.parse().ok().map(Num::Float),
        _ => {
            // Parsers often leave numbers as text (a regex capture, say): compare them as
            // numbers all the same, which is what `status >= 400` means.
            let s = std::str::from_utf8(text(v)?).ok()?.trim();
            if let Ok(i) = s.parse::<i64>() {
                Some(Num::Int(i))
            } else {
                s.parse::<f64>().ok().map(Num::Float)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

fn ip_of(v: &Value) -> Option<IpAddr> {
    match v {
        Value::Ip(ip) => Some(*ip),
        _ => std::str::from_utf8(text(v)?).ok()?.trim().parse().ok(),
    }
}

fn order(v: &Value, lit: &Lit) -> Option<std::cmp::Ordering> {
    match lit {
        Lit::Int(i) => number(v)?.cmp(Num::Int(*i)),
        Lit::Float(f) => number(v)?.cmp(Num::Float(*f)),
        Lit::Str(s, ip) => match (v, ip) {
            (Value::Ip(a), Some(b)) => Some(a.cmp(b)),
            _ => Some(text(v)?.cmp(s.as_bytes())),
        },
        Lit::Bool(b) => match v {
            Value::Bool(a) => Some(a.cmp(b)),
            _ => None,
        },
    }
}

fn test(t: &Test, v: &Value) -> bool {
    use std::cmp::Ordering::*;
    match t {
        Test::Exists => true,
        Test::Cmp(op, lit) => match (op, order(v, lit)) {
            (_, None) => false,
            (CmpOp::Eq, Some(o)) => o == Equal,
            (CmpOp::Ne, Some(o)) => o != Equal,
            (CmpOp::Lt, Some(o)) => o == Less,
            (CmpOp::Le, Some(o)) => o != Greater,
            (CmpOp::Gt, Some(o)) => o == Greater,
            (CmpOp::Ge, Some(o)) => o != Less,
        },
        Test::Contains(finder) => match v {
            Value::List(items) => items
                .iter()
                .any(|i| text(i).is_some_and(|t| t == finder.needle())),
            _ => text(v).is_some_and(|hay| contains(finder, hay)),
        },
        #[cfg(feature = "regex")]
        Test::Matches(re) => text(v).is_some_and(|t| re.is_match(t)),
        Test::In(lits) => lits.iter().any(|l| order(v, l) == Some(Equal)),
        Test::InCidr(nets) => match v {
            Value::Net(n) => nets.iter().any(|x| x.contains(n)),
            _ => ip_of(v).is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
        },
    }
}

/// Whether `hay` holds the finder's needle (an empty one is in every text). A vectorised
/// search: comparing at every byte position made this the largest cost of a filter on
/// long messages.
fn contains(finder: &memchr::memmem::Finder<'_>, hay: &[u8]) -> bool {
    finder.find(hay).is_some()
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(Lit),
    Op(CmpOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Num(Lit::Int(i)) => write!(f, "number {i}"),
            Tok::Num(Lit::Float(x)) => write!(f, "number {x}"),
            Tok::Num(_) => f.write_str("a literal"),
            Tok::Op(op) => write!(f, "`{}`", op_str(*op)),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::LBracket => f.write_str("`[`"),
            Tok::RBracket => f.write_str("`]`"),
            Tok::Comma => f.write_str("`,`"),
        }
    }
}

fn op_str(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Eq => "==",
        CmpOp::Ne => "!=",
        CmpOp::Lt => "<",
        CmpOp::Le => "<=",
        CmpOp::Gt => ">",
        CmpOp::Ge => ">=",
    }
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    column: usize,
}

fn err<T>(column: usize, message: impl Into<String>) -> Result<T, ExprError> {
    Err(ExprError {
        column,
        message: message.into(),
    })
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '@'
}

fn lex(text: &str) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let single = match c {
            '(' => Some(Tok::LParen),
            ')' => Some(Tok::RParen),
            '[' => Some(Tok::LBracket),
            ']' => Some(Tok::RBracket),
            ',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            out.push(Token { tok, column });
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let op = match (c, next) {
            ('=', Some('=')) => Some((CmpOp::Eq, 2)),
            ('!', Some('=')) => Some((CmpOp::Ne, 2)),
            ('<', Some('=')) => Some((CmpOp::Le, 2)),
            ('>', Some('=')) => Some((CmpOp::Ge, 2)),
            ('<', _) => Some((CmpOp::Lt, 1)),
            ('>', _) => Some((CmpOp::Gt, 1)),
            ('=', _) => return err(column, "`=` is not an operator; compare with `==`"),
            ('!', _) => return err(column, "`!` is not an operator; negate with `not`"),
            _ => None,
        };
        if let Some((op, len)) = op {
            out.push(Token {
                tok: Tok::Op(op),
                column,
            });
            i += len;
            continue;
        }
        if c == '"' || c == '\'' {
            let mut s = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return err(column, "string not closed"),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        match chars.get(j + 1) {
                            Some('"') => s.push('"'),
                            Some('\'') => s.push('\''),
                            Some('\\') => s.push('\\'),
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            // Kept as written so that regular expressions need no doubling.
                            Some(&other) => {
                                s.push('\\');
                                s.push(other);
                            }
                            None => return err(column, "string not closed"),
                        }
                        j += 2;
                    }
                    Some(&other) => {
                        s.push(other);
                        j += 1;
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                column,
            });
            i = j + 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '-' && next.is_some_and(|n| n.is_ascii_digit())) {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.') {
                // An exponent's sign belongs to the number.
                if matches!(chars[j], 'e' | 'E') && matches!(chars.get(j + 1), Some('+' | '-')) {
                    j += 1;
                }
                j += 1;
            }
            let s: String = chars[i..j].iter().collect();
            let lit = if let Ok(n) = s.parse::<i64>() {
                Lit::Int(n)
            } else {
                match s.parse::<f64>() {
                    Ok(x) if x.is_finite() => Lit::Float(x),
                    _ => return err(column, format!("{s:?} is not a number")),
                }
            };
            out.push(Token {
                tok: Tok::Num(lit),
                column,
            });
            i = j;
            continue;
        }
        if is_ident_char(c) {
            let mut j = i + 1;
            while j < chars.len() && is_ident_char(chars[j]) {
                j += 1;
            }
            out.push(Token {
                tok: Tok::Ident(chars[i..j].iter().collect()),
                column,
            });
            i = j;
            continue;
        }
        return err(column, format!("unexpected character {c:?}"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

const KEYWORDS: &[&str] = &[
    "and", "or", "not", "contains", "matches", "in", "in_cidr", "exists", "true", "false",
];

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let t = self.tokens.get(self.pos);
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Ident(s), .. }) if s == kw)
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn describe_next(&self) -> String {
        self.peek()
            .map_or_else(|| "the end".to_string(), |t| t.tok.to_string())
    }

    fn or(&mut self) -> Result<Node, ExprError> {
        let mut v = vec![self.and()?];
        while self.at_keyword("or") {
            self.pos += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.swap_remove(0)
        } else {
            Node::Or(v)
        })
    }

    fn and(&mut self) -> Result<Node, ExprError> {
        let mut v = vec![self.not()?];
        while self.at_keyword("and") {
            self.pos += 1;
            v.push(self.not()?);
        }
        Ok(if v.len() == 1 {
            v.swap_remove(0)
        } else {
            Node::And(v)
        })
    }

    fn enter(&mut self, column: usize) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                column,
                format!("nested more than {MAX_DEPTH} deep (parentheses and `not`)"),
            );
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Node, ExprError> {
        if self.at_keyword("not") {
            let column = self.column();
            self.pos += 1;
            self.enter(column)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Node::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Node, ExprError> {
        let column = self.column();
        let what = self.describe_next();
        match self.next().map(|t| t.tok.clone()) {
            Some(Tok::LParen) => {
                self.enter(column)?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Token {
                        tok: Tok::RParen, ..
                    }) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => err(
                        self.column(),
                        format!(
                            "expected `)` closing the `(` at column {column}, found {}",
                            self.describe_next()
                        ),
                    ),
                }
            }
            Some(Tok::Ident(name)) if !KEYWORDS.contains(&name.as_str()) => {
                let path = Path::parse(&name).map_err(|e| ExprError {
                    column: column + e.column - 1,
                    message: format!("field path {name:?} has an empty name"),
                })?;
                let operand = self
                    .tokens
                    .get(self.pos + 1)
                    .map_or(self.end_column, |t| t.column);
                let test = self.test(&name)?;
                Ok(Node::Test(path, test, operand))
            }
            _ => err(
                column,
                format!("expected a field name or `(`, found {what}"),
            ),
        }
    }

    fn test(&mut self, field: &str) -> Result<Test, ExprError> {
        let column = self.column();
        let what = self.describe_next();
        let tok = self.next().map(|t| t.tok.clone());
        match tok {
            Some(Tok::Op(op)) => {
                let lit_col = self.column();
                let lit = self.literal()?;
                if matches!(lit, Lit::Bool(_)) && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                    return err(
                        lit_col,
                        format!("`{}` orders numbers or strings, not booleans", op_str(op)),
                    );
                }
                Ok(Test::Cmp(op, lit))
            }
            Some(Tok::Ident(kw)) => match kw.as_str() {
                "exists" => Ok(Test::Exists),
                "contains" => {
                    let needle = self.string("contains")?.1;
                    Ok(Test::Contains(Box::new(
                        memchr::memmem::Finder::new(needle.as_bytes()).into_owned(),
                    )))
                }
                "matches" => {
                    let (col, re) = self.string("matches")?;
                    matches_test(col, &re)
                }
                "in" => {
                    let items = self.list("in")?;
                    Ok(Test::In(items.into_iter().map(|(_, l)| l).collect()))
                }
                "in_cidr" => {
                    let mut nets = Vec::new();
                    for (col, lit) in self.list("in_cidr")? {
                        let Lit::Str(s, ip) = &lit else {
                            return err(
                                col,
                                format!(
                                    "`in_cidr` takes networks as strings such as \"10.0.0.0/8\", \
                                     found {}",
                                    lit.kind()
                                ),
                            );
                        };
                        match (s.trim().parse::<IpNet>(), ip) {
                            (Ok(n), _) => nets.push(n),
                            (Err(_), Some(ip)) => nets.push(IpNet::from(*ip)),
                            (Err(_), None) => {
                                return err(
                                    col,
                                    format!("{s:?} is not a network such as \"10.0.0.0/8\""),
                                );
                            }
                        }
                    }
                    Ok(Test::InCidr(nets))
                }
                _ => err(
                    column,
                    format!("expected an operator after `{field}`, found {what}"),
                ),
            },
            _ => err(
                column,
                format!(
                    "expected an operator after `{field}` (==, !=, <, <=, >, >=, contains, \
                     matches, in, in_cidr, exists), found {what}"
                ),
            ),
        }
    }

    fn literal(&mut self) -> Result<Lit, ExprError> {
        let column = self.column();
        let what = self.describe_next();
        match self.next().map(|t| t.tok.clone()) {
            Some(Tok::Str(s)) => {
                let ip = s.parse().ok();
                Ok(Lit::Str(s, ip))
            }
            Some(Tok::Num(n)) => Ok(n),
            Some(Tok::Ident(s)) if s == "true" => Ok(Lit::Bool(true)),
            Some(Tok::Ident(s)) if s == "false" => Ok(Lit::Bool(false)),
            _ => err(
                column,
                format!("expected a string, a number, true or false, found {what}"),
            ),
        }
    }

    fn string(&mut self, op: &str) -> Result<(usize, String), ExprError> {
        let column = self.column();
        match self.literal()? {
            Lit::Str(s, _) => Ok((column, s)),
            other => err(
                column,
                format!("`{op}` takes a string, found {}", other.kind()),
            ),
        }
    }

    fn list(&mut self, op: &str) -> Result<Vec<(usize, Lit)>, ExprError> {
        let column = self.column();
        if !matches!(
            self.peek(),
            Some(Token {
                tok: Tok::LBracket,
                ..
            })
        ) {
            return err(
                column,
                format!(
                    "`{op}` takes a list such as [\"a\", \"b\"], found {}",
                    self.describe_next()
                ),
            );
        }
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            if matches!(
                self.peek(),
                Some(Token {
                    tok: Tok::RBracket,
                    ..
                })
            ) {
                self.pos += 1;
                break;
            }
            let col = self.column();
            items.push((col, self.literal()?));
            match self.peek().map(|t| &t.tok) {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::RBracket) => {}
                _ => {
                    return err(
                        self.column(),
                        format!(
                            "expected `,` or `]` in the list opened at column {column}, found {}",
                            self.describe_next()
                        ),
                    );
                }
            }
        }
        Ok(items)
    }
}

#[cfg(feature = "regex")]
fn matches_test(column: usize, re: &str) -> Result<Test, ExprError> {
    // Bounded so that a hostile pattern cannot take unbounded memory at load.
    regex::bytes::RegexBuilder::new(re)
        .size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map(Test::Matches)
        .map_err(|e| ExprError {
            column,
            message: format!("invalid regular expression: {e}"),
        })
}

#[cfg(not(feature = "regex"))]
fn matches_test(column: usize, _re: &str) -> Result<Test, ExprError> {
    err(
        column,
        "`matches` needs deadbeat built with the `regex` feature, which is off",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Key, Map};

    fn rec() -> Record {
        let mut r = Record::new();
        r.insert(Key::new("status"), Value::Int(503));
        r.insert(Key::new("ratio"), Value::Float(0.25));
        r.insert(Key::new("method"), Value::Str("GET".into()));
        r.insert(Key::new("path"), Value::Shared("/api/users".into()));
        r.insert(
            Key::new("message"),
            Value::Bytes(b"GET /x ERROR boom".to_vec()),
        );
        r.insert(Key::new("client"), Value::Ip("10.1.2.3".parse().unwrap()));
        r.insert(Key::new("peer"), Value::Str("2001:db8::5".into()));
        r.insert(Key::new("code"), Value::Str("404".into()));
        r.insert(Key::new("ok"), Value::Bool(false));
        r.insert(Key::new("nothing"), Value::Null);
        r.insert(
            Key::new("big"),
            Value::BigInt("18446744073709551615".into()),
        );
        r.insert(
            Key::new("tags"),
            Value::List(vec![Value::Str("a".into()), Value::Str("b".into())]),
        );
        let mut src = Map::new();
        src.insert(Key::new("ip"), Value::Str("192.168.1.9".into()));
        src.insert(Key::new("port"), Value::Int(443));
        r.insert(Key::new("src"), Value::Map(src));
        r
    }

    fn t(e: &str) -> bool {
        Expr::parse(e)
            .unwrap_or_else(|x| panic!("{e}: {x}"))
            .eval(&rec())
    }

    fn e(e: &str) -> ExprError {
        match Expr::parse(e) {
            Ok(_) => panic!("{e} parsed"),
            Err(x) => x,
        }
    }

    #[test]
    fn comparisons() {
        assert!(t("status == 503"));
        assert!(t("status != 200"));
        assert!(t(
            "status > 500 and status >= 503 and status < 504 and status <= 503"
        ));
        assert!(!t("status < 503"));
        assert!(t("ratio < 0.5 and ratio > -1 and ratio == 2.5e-1"));
        assert!(t("status == 503.0"));
        assert!(t("method == \"GET\" and method != 'POST'"));
        assert!(t("method < \"HEAD\" and path >= \"/api\""));
        assert!(t("message == \"GET /x ERROR boom\""));
        assert!(
            t("code == 404 and code >= 400"),
            "numeric text compares as a number"
        );
        assert!(!t("method == 1"));
        assert!(!t("status == \"503\""));
        assert!(t("ok == false and not ok == true"));
        assert!(t("client == \"10.1.2.3\" and client != \"10.1.2.4\""));
        assert!(t("src.port == 443 and src.ip == \"192.168.1.9\""));
    }

    #[test]
    fn integers_beyond_i64_are_numbers() {
        assert!(t("big > 5 and big >= 9223372036854775807 and big > 1e19"));
        assert!(!t("big < 0"));
    }

    #[test]
    fn missing_fields_are_false() {
        assert!(!t("missing == 1"));
        assert!(!t("missing != 1"));
        assert!(!t("missing < 1"));
        assert!(!t("missing contains \"x\""));
        assert!(!t("missing in [1]"));
        assert!(!t("src.nope exists"));
        assert!(!t("status.deeper exists"));
        assert!(t("not missing == 1"));
        assert!(t("nothing exists and not missing exists"));
    }

    /// `contains` through an expression, on one text field: the finder built at parse time.
    fn holds(hay: &[u8], needle: &str) -> bool {
        let escaped = needle.replace('\\', "\\\\").replace('"', "\\\"");
        let e = Expr::parse(&format!("m contains \"{escaped}\""))
            .unwrap_or_else(|x| panic!("{needle:?}: {x}"));
        let mut r = Record::new();
        let v = match std::str::from_utf8(hay) {
            Ok(s) => Value::Str(s.into()),
            Err(_) => Value::Bytes(hay.to_vec()),
        };
        r.insert(Key::new("m"), v);
        e.eval(&r)
    }

    #[test]
    fn contains_finds_substrings_anywhere() {
        let naive = |hay: &[u8], n: &[u8]| n.is_empty() || hay.windows(n.len()).any(|w| w == n);
        let hay = "Failed password for invalid user ünïcødé from 10.0.0.1 port 22 ssh2";
        for needle in [
            "Failed",           // at the start
            "ssh2",             // at the end
            hay,                // the whole text
            "ünïcødé",          // non-ASCII
            "ïc",               // inside a multi-byte run
            "",                 // empty: in every text
            "port 22 ssh2 ",    // runs past the end
            "Failed passwords", // a prefix that diverges late
            "failed",           // case matters
            "invalid users",
            "x",
        ] {
            assert_eq!(
                holds(hay.as_bytes(), needle),
                naive(hay.as_bytes(), needle.as_bytes()),
                "{needle:?}"
            );
        }
        assert!(holds(b"", ""));
        assert!(!holds(b"", "a"));
        assert!(!holds(b"ab", "abc"), "needle longer than the text");
        assert!(holds(b"a\"quoted\\b", "\"quoted\\"));
        // Invalid UTF-8 (a `Bytes` value) is searched byte-wise too.
        assert!(holds(b"bad \xff byte from 1.2.3.4", "from 1.2"));
        assert!(!holds(b"bad \xff byte", "from"));
        // Each position of a needle in a text longer than a vector register.
        let long = "ab".repeat(100);
        for at in [0, 1, 63, 64, 65, 150, 197] {
            let mut h = long.clone().into_bytes();
            h.splice(at..at + 3, *b"xyz");
            assert!(holds(&h, "xyz"), "{at}");
            assert!(!holds(&h, "xyzz"), "{at}");
        }
    }

    #[test]
    fn contains_in_and_cidr() {
        assert!(t("message contains \"ERROR\""));
        assert!(t("path contains \"users\" and method contains \"\""));
        assert!(!t("message contains \"WARN\""));
        assert!(t("tags contains \"b\" and not tags contains \"c\""));
        assert!(!t("status contains \"5\""));
        assert!(t("method in [\"PUT\", \"GET\"]"));
        assert!(t("status in [200, 503,]"));
        assert!(!t("status in []"));
        assert!(t("client in_cidr [\"10.0.0.0/8\", \"2001:db8::/32\"]"));
        assert!(t("peer in_cidr [\"10.0.0.0/8\", \"2001:db8::/32\"]"));
        assert!(t("src.ip in_cidr [\"192.168.1.9\"]"));
        assert!(!t("client in_cidr [\"192.168.0.0/16\"]"));
        assert!(!t("method in_cidr [\"0.0.0.0/0\"]"));
        let mut r = Record::new();
        r.insert(Key::new("n"), Value::Net("10.2.0.0/16".parse().unwrap()));
        assert!(Expr::parse("n in_cidr [\"10.0.0.0/8\"]").unwrap().eval(&r));
    }

    #[cfg(feature = "regex")]
    #[test]
    fn matches() {
        assert!(t("message matches \"^GET \""));
        assert!(t(r#"code matches "^\d{3}$""#));
        assert!(!t("method matches \"^POST\""));
        assert_eq!(e("message matches \"(\"").column, 17);
        assert!(e("message matches 3").message.contains("takes a string"));
    }

    #[cfg(not(feature = "regex"))]
    #[test]
    fn matches_without_the_feature() {
        let x = e("message matches \"^GET \"");
        assert_eq!(x.column, 17);
        assert!(x.message.contains("feature"), "{x}");
    }

    #[test]
    fn precedence_and_parentheses() {
        // `and` binds tighter than `or`.
        assert!(t("status == 1 and status == 2 or status == 503"));
        assert!(t("status == 503 or status == 1 and status == 2"));
        assert!(!t("(status == 503 or status == 1) and status == 2"));
        // `not` binds tighter than `and` and `or`.
        assert!(!t("not status == 503 and status == 503"));
        assert!(t("not status == 1 and status == 503"));
        assert!(!t("not (status == 1 or status == 503)"));
        assert!(t("not status == 1 or status == 1"));
        assert!(t("not not status == 503"));
        assert!(t("((((status == 503))))"));
    }

    #[test]
    fn errors_name_the_column() {
        let x = e("status >= ");
        assert_eq!(x.column, 11);
        assert!(x.message.contains("the end"), "{x}");
        assert_eq!(e("status = 3").column, 8);
        assert_eq!(e("status ! 3").column, 8);
        assert_eq!(e("status == 3 and").column, 16);
        assert_eq!(e("status == 3 xor 4").column, 13);
        assert_eq!(e("message == \"open").column, 12);
        assert_eq!(e("(status == 3").column, 13);
        assert_eq!(e("status == 3)").column, 12);
        assert_eq!(e("status ~ 3").column, 8);
        assert_eq!(e("status 3").column, 8);
        assert_eq!(e("== 3").column, 1);
        assert_eq!(e("and == 3").column, 1);
        assert_eq!(e("").column, 1);
        assert_eq!(e("a..b exists").column, 3);
        assert_eq!(e("x == 12ab").column, 6);
        assert_eq!(e("é == 1 and ü").column, 13, "columns count characters");
    }

    #[test]
    fn type_errors() {
        assert_eq!(e("ok < true").column, 6);
        assert!(e("m contains 3").message.contains("takes a string"));
        let x = e("m in \"a\"");
        assert_eq!(x.column, 6);
        assert!(x.message.contains("takes a list"), "{x}");
        let x = e("c in_cidr [\"10.0.0.0/8\", \"10.0.0.0/33\"]");
        assert_eq!(x.column, 26);
        assert!(x.message.contains("not a network"), "{x}");
        let x = e("c in_cidr [\"10.0.0.0/8\", 7]");
        assert_eq!(x.column, 26);
        assert!(e("c in_cidr \"10.0.0.0/8\"").message.contains("list"));
        assert_eq!(e("m in [1 2]").column, 9);
        assert_eq!(e("m in [1, (]").column, 10);
    }

    #[test]
    fn known_kinds_refuse_comparisons_that_never_hold() {
        let kinds = |p: &Path| match p.to_string().as_str() {
            "status" => Some(FieldKind::Number),
            "ok" => Some(FieldKind::Bool),
            _ => None,
        };
        let check = |e: &str| Expr::parse(e).unwrap().check_kinds(kinds);
        let x = check("method == \"GET\" and status >= \"400\"").unwrap_err();
        assert_eq!(x.column, 31, "{x}");
        assert!(x.message.contains("write the number 400"), "{x}");
        let x = check("not (status in [200, \"404\"])").unwrap_err();
        assert_eq!(x.column, 16, "{x}");
        assert!(
            check("status == \"-\"")
                .unwrap_err()
                .message
                .contains("never true")
        );
        assert!(check("ok == 1").is_err());
        assert!(check("status == true").is_err());
        assert!(check("status >= 400 and ok == true and other >= \"400\"").is_ok());
        assert!(check("status exists and status in [1, 2]").is_ok());
    }

    #[test]
    fn mismatches_are_reported_per_datum() {
        let c = Condition::records(Expr::parse("status >= \"400\" or code > 1000").unwrap());
        let mut r = rec();
        let mut m = None;
        assert!(!c.test_checked(&r, &mut m));
        let m = m.expect("a number compared with a string");
        assert_eq!(m.field.to_string(), "status");
        assert_eq!((m.found, m.wanted), ("a number", "a string"));
        assert!(m.to_string().contains("`status` held a number"), "{m}");
        // Text that is no number, ordered against a number.
        let c = Condition::records(Expr::parse("method > 3").unwrap());
        let mut m = None;
        assert!(!c.test_checked(&r, &mut m));
        assert_eq!(m.map(|m| m.found), Some("text"));
        // Not mismatches: a comparison that merely fails, equality with a non-numeric
        // string (`bytes != "-"` on a field holding numbers or `-`), a missing field.
        for e in [
            "status < 400",
            "status == \"-\"",
            "method == 3",
            "missing > \"a\"",
            "code > 1000",
            "nothing > 1",
        ] {
            let c = Condition::records(Expr::parse(e).unwrap());
            let mut m = None;
            let _ = c.test_checked(&r, &mut m);
            assert_eq!(m, None, "{e}");
        }
        // Equality with a string written as a number is one.
        let c = Condition::records(Expr::parse("status == \"503\"").unwrap());
        let mut m = None;
        assert!(!c.test_checked(&r, &mut m));
        assert!(m.is_some());
        r.insert(Key::new("status"), Value::Str("503".into()));
        let mut m = None;
        assert!(c.test_checked(&r, &mut m), "text equals the string");
        assert_eq!(m, None);
    }

    #[test]
    fn depth_is_limited() {
        let ok = format!("{}a exists{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Expr::parse(&ok).is_ok());
        let deep = format!(
            "{}a exists{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let x = e(&deep);
        assert_eq!(x.column, MAX_DEPTH + 1);
        assert!(x.message.contains("nested"), "{x}");
        assert!(Expr::parse(&"(".repeat(1_000_000)).is_err());
        assert!(Expr::parse(&"not ".repeat(1_000_000)).is_err());
        // Long flat chains are not nesting: they parse and evaluate without recursion.
        let long = vec!["status == 503"; 100_000].join(" and ");
        assert!(Expr::parse(&long).unwrap().eval(&rec()));
    }

    #[test]
    fn generic_lookup() {
        struct Hit {
            status: Value,
        }
        let e = Expr::parse("status >= 400 and not other exists").unwrap();
        fn get<'a>(h: &'a Hit, p: &Path) -> Option<&'a Value> {
            (p.keys()[0].as_str() == "status").then_some(&h.status)
        }
        assert!(e.eval_with(
            &Hit {
                status: Value::Int(404)
            },
            get
        ));
        let c = Condition::new(e, get);
        assert!(!c.test(&Hit {
            status: Value::Int(200)
        }));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "\"",
            "'",
            "\\",
            "-",
            "--1",
            "1",
            "a ==",
            "a in [",
            "a in [1,",
            "a in_cidr [\"",
            "(((",
            ")))",
            "a == \"\\",
            "not",
            "a exists exists",
            "\u{0}",
            "a == 1e400",
            "a == 99999999999999999999",
            "a == -",
            "a < [1]",
        ] {
            let _ = Expr::parse(s);
        }
        assert!(
            Expr::parse("a == 99999999999999999999").is_ok(),
            "big numbers are floats"
        );
        assert!(Expr::parse("a == 1e400").is_err(), "infinite is refused");
    }
}
