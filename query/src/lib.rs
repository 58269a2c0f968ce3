//! Queries over the rows of a snapshot, evaluated next to the data: select rows (keys, a prefix
//! or a key range), filter them by their fields, then return them projected, or grouped and
//! aggregated, ordered and limited. One implementation for the server's `/query`, `snapkv
//! query` and the Python package.
//!
//! ```
//! # use snapkv_format::{Metadata, Shards, Snapshot, SnapshotWriter, ValueEncoding, WriterOptions};
//! # let mut meta = Metadata::default();
//! # meta.value_encoding = ValueEncoding::Json;
//! # let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
//! # w.insert(b"SE/1", br#"{"genre":"drama","views":150}"#).unwrap();
//! # w.insert(b"SE/2", br#"{"genre":"drama","views":50}"#).unwrap();
//! # let shards = Shards::single(Snapshot::open(w.finish().unwrap().0).unwrap());
//! let query = snapkv_query::Query::parse(br#"{"prefix": "SE/", "filter": {"views": {">": 100}},
//!     "group_by": ["genre"], "aggregates": {"n": {"count": "*"}}}"#)?;
//! let plan = query.plan(shards.shards()[0].metadata())?;
//! let answer = snapkv_query::run(&shards, &plan, &snapkv_query::Limits::default())?;
//! assert_eq!(answer.rows[0]["n"], 1);
//! # Ok::<(), snapkv_query::QueryError>(())
//! ```
//!
//! The request format is specified in `spec/openapi.yaml` (`POST /v1/datasets/{ds}/query`).

use bytes::Bytes;
use serde_json::{Map, Value};
use snapkv_format::{Metadata, Shards, ValueEncoding};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

/// Why a query was not answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The query is malformed, names a field the dataset does not have, compares a field with
    /// a value of another type, or uses an operator that does not apply: fix the query.
    #[error("{}{message}", field.as_ref().map(|f| format!("field {f:?}: ")).unwrap_or_default())]
    Invalid {
        /// The field at fault, when there is one.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// The query needs more than a limit allows: narrow it (a prefix, a range, keys).
    #[error(
        "the query went over {limit} ({allowed}); narrow it with a prefix, a key range or keys"
    )]
    OverBudget {
        /// The limit (`max_rows_scanned`, `max_bytes_read`, `max_time`, `max_groups`).
        limit: &'static str,
        /// Its value, as text.
        allowed: String,
    },
    /// Reading the snapshot failed.
    #[error("reading the snapshot failed")]
    Read(#[from] snapkv_format::Error),
    /// The answer could not be written as Arrow.
    #[error("cannot write the answer as Arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl QueryError {
    /// A short machine-readable code: `bad_query`, `over_budget` or `internal`.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Invalid { .. } => "bad_query",
            QueryError::OverBudget { .. } => "over_budget",
            QueryError::Read(_) | QueryError::Arrow(_) => "internal",
        }
    }
}

fn invalid(field: Option<&str>, message: impl Into<String>) -> QueryError {
    QueryError::Invalid {
        field: field.map(str::to_owned),
        message: message.into(),
    }
}

/// What a query may use. Every limit has a default; going over one is an error that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Rows read from the snapshot. Default: 1,000,000.
    pub max_rows_scanned: u64,
    /// Bytes of keys and values read. Default: 1 GiB.
    pub max_bytes_read: u64,
    /// Time spent. Default: 5 s.
    pub max_time: Duration,
    /// Groups (and rows held for ordering) at once. Default: 100,000.
    pub max_groups: usize,
    /// Rows in an answer (`limit` at most). Default: 10,000.
    pub max_rows: usize,
    /// Threads a grouped query over a key range may read it with, each a part of about as
    /// many blocks (at least [`MIN_BLOCKS_PER_THREAD`] each). Default: the machine's cores,
    /// at most 4.
    pub threads: usize,
}

/// The fewest blocks a thread of a grouped query reads: below that, starting it costs more
/// than it saves.
pub const MIN_BLOCKS_PER_THREAD: u64 = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rows_scanned: 1_000_000,
            max_bytes_read: 1 << 30,
            max_time: Duration::from_secs(5),
            max_groups: 100_000,
            max_rows: 10_000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(4)),
        }
    }
}

/// A query, as sent (see the crate documentation and `spec/openapi.yaml`).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Rows by key: strings, or integers (their decimal text).
    #[serde(default)]
    pub keys: Option<Vec<Value>>,
    /// Rows whose key starts with this.
    #[serde(default)]
    pub prefix: Option<String>,
    /// Rows from this key on (inclusive).
    #[serde(default)]
    pub start: Option<String>,
    /// Rows before this key (exclusive).
    #[serde(default)]
    pub end: Option<String>,
    /// Scores computed per row from a numeric array field and a request vector, usable as
    /// fields: `{"score": {"cosine": {"field": "embedding", "vector": [0.1, 0.7]}}}` (`dot`
    /// or `cosine`).
    #[serde(default)]
    pub vectors: BTreeMap<String, Value>,
    /// Which rows count.
    #[serde(default)]
    pub filter: Option<Value>,
    /// Fields of each row to return (without aggregates).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Fields to group by.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Output name → aggregate, e.g. `{"total": {"sum": "views"}}`, in the order given (the
    /// order of the answer's columns).
    #[serde(default, deserialize_with = "in_order")]
    pub aggregates: Vec<(String, Value)>,
    /// Output fields to order by.
    #[serde(default)]
    pub order_by: Vec<OrderBy>,
    /// Most rows answered.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// Reads a JSON object as its members in document order; a name given twice is an error.
fn in_order<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, Value)>, D::Error> {
    struct Members;
    impl<'de> serde::de::Visitor<'de> for Members {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of named aggregates")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(String, Value)> = Vec::new();
            while let Some((name, value)) = map.next_entry::<String, Value>()? {
                if out.iter().any(|(n, _)| *n == name) {
                    return Err(serde::de::Error::custom(format!(
                        "aggregate {name:?} is given twice"
                    )));
                }
                out.push((name, value));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Members)
}

/// One ordering: an output field, ascending unless `desc`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBy {
    /// The output field.
    pub field: String,
    /// Largest first.
    #[serde(default)]
    pub desc: bool,
}

/// The kind of values a field holds, from the stored schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Bool,
    Other,
}

fn kind_of(data_type: &Value) -> Kind {
    let name = match data_type {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.keys().next().map_or("", String::as_str),
        _ => "",
    };
    match name {
        n if n.starts_with("Int")
            || n.starts_with("UInt")
            || n.starts_with("Float")
            || n.starts_with("Decimal") =>
        {
            Kind::Number
        }
        "Utf8" | "LargeUtf8" | "Utf8View" | "Date32" | "Date64" | "Timestamp" => Kind::Text,
        "Boolean" => Kind::Bool,
        _ => Kind::Other,
    }
}

/// Where a field's value comes from.
#[derive(Debug, Clone)]
enum Source {
    /// The whole key, as text.
    Key,
    /// Part `i` of a composite key (`a/b/c`), of `n` parts.
    KeyPart { i: usize, n: usize, kind: Kind },
    /// A path into the JSON value.
    Value(Vec<String>),
    /// Score `i` of the query's `vectors`.
    Computed(usize),
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    source: Source,
    kind: Option<Kind>,
}

/// Fields known from a snapshot's metadata.
struct Schema {
    key_columns: Vec<String>,
    kinds: HashMap<String, Kind>,
    /// False when the snapshot has no schema: any value field is accepted.
    known: bool,
    json: bool,
    /// Names of the query's computed scores.
    computed: Vec<String>,
}

impl Schema {
    fn new(meta: &Metadata) -> Schema {
        let mut kinds = HashMap::new();
        let fields = meta
            .schema
            .as_ref()
            .and_then(|s| s.get("fields"))
            .and_then(Value::as_array);
        for f in fields.into_iter().flatten() {
            if let Some(name) = f.get("name").and_then(Value::as_str) {
                let kind = f.get("data_type").map_or(Kind::Other, kind_of);
                kinds.insert(name.to_owned(), kind);
            }
        }
        Schema {
            key_columns: meta.key_columns.clone(),
            known: fields.is_some(),
            kinds,
            json: meta.value_encoding == ValueEncoding::Json,
            computed: Vec::new(),
        }
    }

    fn field(&self, name: &str) -> Result<Field, QueryError> {
        if let Some(i) = self.computed.iter().position(|c| c == name) {
            return Ok(Field {
                name: name.to_owned(),
                source: Source::Computed(i),
                kind: Some(Kind::Number),
            });
        }
        if name == "key" {
            return Ok(Field {
                name: name.to_owned(),
                source: Source::Key,
                kind: Some(Kind::Text),
            });
        }
        if let Some(i) = self.key_columns.iter().position(|k| k == name) {
            let kind = self.kinds.get(name).copied().unwrap_or(Kind::Text);
            return Ok(Field {
                name: name.to_owned(),
                source: Source::KeyPart {
                    i,
                    n: self.key_columns.len(),
                    kind,
                },
                kind: Some(kind),
            });
        }
        if !self.json {
            return Err(invalid(
                Some(name),
                "values of this dataset are not JSON: only `key` and the key columns can be used",
            ));
        }
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(invalid(Some(name), "empty part in a field path"));
        }
        let kind = match self.kinds.get(&path[0]) {
            Some(k) if path.len() == 1 => Some(*k),
            Some(_) => None,
            None if self.known => {
                let mut names: Vec<&str> = self.kinds.keys().map(String::as_str).collect();
                names.sort_unstable();
                return Err(invalid(
                    Some(name),
                    format!("no such field; the fields are key, {}", names.join(", ")),
                ));
            }
            None => None,
        };
        Ok(Field {
            name: name.to_owned(),
            source: Source::Value(path),
            kind,
        })
    }
}

/// Comparison operators of filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cmp(Field, Op, Value),
    In(Field, Vec<Value>),
    IsNull(Field, bool),
}

/// Checks that `literal` can be compared with `field`.
fn check_literal(field: &Field, op: &str, literal: &Value) -> Result<(), QueryError> {
    let literal_kind = match literal {
        Value::Number(_) => Kind::Number,
        Value::String(_) => Kind::Text,
        Value::Bool(_) => Kind::Bool,
        Value::Null => {
            return Err(invalid(
                Some(&field.name),
                format!("{op} null never matches: use {{\"is null\": true}}"),
            ))
        }
        _ => {
            return Err(invalid(
                Some(&field.name),
                format!("{op} takes a number, a string or a boolean"),
            ))
        }
    };
    match field.kind {
        Some(k @ (Kind::Number | Kind::Text | Kind::Bool)) if k != literal_kind => Err(invalid(
            Some(&field.name),
            format!(
                "holds {}, compared with {literal}",
                match k {
                    Kind::Number => "numbers",
                    Kind::Text => "text",
                    _ => "booleans",
                }
            ),
        )),
        _ => Ok(()),
    }
}

fn compile_filter(schema: &Schema, f: &Value) -> Result<Filter, QueryError> {
    let Value::Object(o) = f else {
        return Err(invalid(
            None,
            format!("a filter is an object ({{\"field\": {{\">\": 1}}}}, \"and\", \"or\", \"not\"), not {f}"),
        ));
    };
    let mut all = Vec::new();
    for (name, spec) in o {
        match name.as_str() {
            "and" | "or" => {
                let parts = spec
                    .as_array()
                    .ok_or_else(|| invalid(None, format!("{name:?} takes an array of filters")))?
                    .iter()
                    .map(|p| compile_filter(schema, p))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if name == "and" {
                    Filter::And(parts)
                } else {
                    Filter::Or(parts)
                });
            }
            "not" => all.push(Filter::Not(Box::new(compile_filter(schema, spec)?))),
            _ => {
                let field = schema.field(name)?;
                let Value::Object(ops) = spec else {
                    return Err(invalid(
                        Some(name),
                        format!("expected operators, e.g. {{\">\": 100}}, not {spec}"),
                    ));
                };
                for (op, literal) in ops {
                    let cmp = match op.as_str() {
                        "=" => Some(Op::Eq),
                        "!=" => Some(Op::Ne),
                        "<" => Some(Op::Lt),
                        "<=" => Some(Op::Le),
                        ">" => Some(Op::Gt),
                        ">=" => Some(Op::Ge),
                        _ => None,
                    };
                    if let Some(cmp) = cmp {
                        check_literal(&field, op, literal)?;
                        if field.kind == Some(Kind::Bool) && !matches!(cmp, Op::Eq | Op::Ne) {
                            return Err(invalid(
                                Some(name),
                                format!("{op} does not apply to booleans"),
                            ));
                        }
                        all.push(Filter::Cmp(field.clone(), cmp, literal.clone()));
                        continue;
                    }
                    match (op.as_str(), literal) {
                        ("in", Value::Array(values)) => {
                            for v in values {
                                check_literal(&field, "in", v)?;
                            }
                            all.push(Filter::In(field.clone(), values.clone()));
                        }
                        ("is null", Value::Bool(b)) => all.push(Filter::IsNull(field.clone(), *b)),
                        ("in", _) => return Err(invalid(Some(name), "`in` takes an array")),
                        ("is null", _) => {
                            return Err(invalid(Some(name), "`is null` takes true or false"))
                        }
                        _ => {
                            return Err(invalid(
                                Some(name),
                                format!(
                                    "unknown operator {op:?}; use =, !=, <, <=, >, >=, in, is null"
                                ),
                            ))
                        }
                    }
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Filter::And(all)
    })
}

#[derive(Debug, Clone)]
enum Agg {
    /// Rows (`*`), or rows where the field is not null.
    Count(Option<Field>),
    Sum(Field),
    Avg(Field),
    Min(Field),
    Max(Field),
    CountDistinct(Field),
    /// The nearest-rank percentile `p` (0 to 100).
    Percentile(Field, f64),
    /// The `k` rows with the largest `by`: their keys and `by`.
    TopK {
        by: Field,
        k: usize,
    },
}

fn number_field(schema: &Schema, what: &str, v: &Value) -> Result<Field, QueryError> {
    let name = v
        .as_str()
        .ok_or_else(|| invalid(None, format!("{what} takes a field name, not {v}")))?;
    let f = schema.field(name)?;
    if matches!(f.kind, Some(Kind::Text | Kind::Bool)) {
        return Err(invalid(Some(name), format!("{what} needs numbers")));
    }
    Ok(f)
}

fn compile_agg(schema: &Schema, name: &str, spec: &Value) -> Result<Agg, QueryError> {
    let bad = || {
        invalid(
            None,
            format!(
                "aggregate {name:?}: expected one of {{\"count\": \"*\"}}, sum, avg, min, max, \
                 count_distinct (a field), {{\"percentile\": {{\"field\": F, \"p\": 95}}}}, \
                 {{\"top_k\": {{\"by\": F, \"k\": 10}}}}; got {spec}"
            ),
        )
    };
    let Some((op, arg)) = spec
        .as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.iter().next())
    else {
        return Err(bad());
    };
    let field =
        |v: &Value| -> Result<Field, QueryError> { schema.field(v.as_str().ok_or_else(bad)?) };
    Ok(match op.as_str() {
        "count" if arg == "*" => Agg::Count(None),
        "count" => Agg::Count(Some(field(arg)?)),
        "sum" => Agg::Sum(number_field(schema, "sum", arg)?),
        "avg" => Agg::Avg(number_field(schema, "avg", arg)?),
        "min" => Agg::Min(field(arg)?),
        "max" => Agg::Max(field(arg)?),
        "count_distinct" => Agg::CountDistinct(field(arg)?),
        "percentile" => {
            let p = arg
                .get("p")
                .and_then(Value::as_f64)
                .filter(|p| (0.0..=100.0).contains(p))
                .ok_or_else(|| invalid(None, format!("aggregate {name:?}: `p` is 0 to 100")))?;
            Agg::Percentile(
                number_field(
                    schema,
                    "percentile",
                    arg.get("field").unwrap_or(&Value::Null),
                )?,
                p,
            )
        }
        "top_k" => {
            let k = arg
                .get("k")
                .and_then(Value::as_u64)
                .filter(|k| (1..=1000).contains(k))
                .ok_or_else(|| invalid(None, format!("aggregate {name:?}: `k` is 1 to 1000")))?;
            let by = number_field(schema, "top_k", arg.get("by").unwrap_or(&Value::Null))?;
            Agg::TopK { by, k: k as usize }
        }
        _ => return Err(bad()),
    })
}

/// A score computed per row: `dot` or `cosine` of a numeric array field with a vector.
#[derive(Debug, Clone)]
struct Vector {
    field: Field,
    cosine: bool,
    vector: Vec<f64>,
    /// The request vector's norm (cosine).
    norm: f64,
}

impl Vector {
    fn compile(schema: &Schema, name: &str, spec: &Value) -> Result<Vector, QueryError> {
        let bad = |why: &str| {
            invalid(
                None,
                format!(
                    "vector {name:?}: {why}; expected {{\"cosine\": {{\"field\": F, \"vector\": [..]}}}} \
                     or {{\"dot\": ...}}"
                ),
            )
        };
        let Some((op, arg)) = spec
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return Err(bad("not one operation"));
        };
        let cosine = match op.as_str() {
            "cosine" => true,
            "dot" => false,
            _ => return Err(bad(&format!("unknown operation {op:?}"))),
        };
        let field = schema.field(
            arg.get("field")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("no `field`"))?,
        )?;
        if !matches!(field.source, Source::Value(_))
            || matches!(field.kind, Some(Kind::Number | Kind::Text | Kind::Bool))
        {
            return Err(invalid(
                Some(&field.name),
                "a vector field is an array of numbers in the value",
            ));
        }
        let vector: Vec<f64> = arg
            .get("vector")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty() && v.len() <= 65_536)
            .ok_or_else(|| bad("`vector` is an array of 1 to 65,536 numbers"))?
            .iter()
            .map(|x| x.as_f64().ok_or_else(|| bad("`vector` holds numbers only")))
            .collect::<Result<_, _>>()?;
        let norm = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
        if cosine && norm == 0.0 {
            return Err(bad("a cosine needs a vector that is not all zeros"));
        }
        Ok(Vector {
            field,
            cosine,
            vector,
            norm,
        })
    }

    /// The score of a row; null when the field is not an array of numbers of the vector's
    /// length (or, for cosine, is all zeros).
    fn score(&self, row: &Row<'_>) -> Value {
        let Value::Array(xs) = row.get(&self.field) else {
            return Value::Null;
        };
        if xs.len() != self.vector.len() {
            return Value::Null;
        }
        let (mut dot, mut norm) = (0.0, 0.0);
        for (x, y) in xs.iter().zip(&self.vector) {
            let Some(x) = x.as_f64() else {
                return Value::Null;
            };
            dot += x * y;
            norm += x * x;
        }
        if !self.cosine {
            return dot.into();
        }
        if norm == 0.0 {
            return Value::Null;
        }
        (dot / (norm.sqrt() * self.norm)).into()
    }
}

/// Which rows a query reads.
#[derive(Debug, Clone)]
enum Selection {
    Keys(Vec<String>),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>),
}

/// A query checked against a snapshot's metadata, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    selection: Selection,
    vectors: Vec<Vector>,
    filter: Option<Filter>,
    fields: Option<Vec<Field>>,
    group_by: Vec<Field>,
    aggregates: Vec<(String, Agg)>,
    order_by: Vec<OrderBy>,
    limit: Option<usize>,
    /// What rows need of their JSON value: nothing (`Some` of none), these top-level members
    /// (the others are skipped unparsed), or all of it (`None`).
    value_names: Option<Vec<String>>,
}

impl Query {
    /// Parses a query's JSON.
    pub fn parse(json: &[u8]) -> Result<Query, QueryError> {
        let not_a_query = |e: serde_json::Error| invalid(None, format!("not a query: {e}"));
        // An object only: serde would also take a struct's fields from an array. Parsed from
        // the text (not through a `Value`) so that the order of `aggregates` is kept.
        match serde_json::from_slice::<Value>(json).map_err(not_a_query)? {
            Value::Object(_) => serde_json::from_slice(json).map_err(not_a_query),
            other => Err(invalid(
                None,
                format!("not a query: a query is a JSON object, not {other}"),
            )),
        }
    }

    /// Checks the query against a snapshot's metadata (its key columns and stored schema):
    /// unknown fields, type mismatches and bad operators are errors naming the field.
    pub fn plan(&self, meta: &Metadata) -> Result<Plan, QueryError> {
        let mut schema = Schema::new(meta);
        let mut vectors = Vec::new();
        for (name, spec) in &self.vectors {
            if name == "key" || schema.key_columns.contains(name) || schema.kinds.contains_key(name)
            {
                return Err(invalid(
                    Some(name),
                    "a vector's name must not be a field of the dataset",
                ));
            }
            vectors.push(Vector::compile(&schema, name, spec)?);
            schema.computed.push(name.clone());
        }
        let ranged = self.prefix.is_some() || self.start.is_some() || self.end.is_some();
        let selection = match (&self.keys, &self.prefix) {
            (Some(_), _) if ranged => {
                return Err(invalid(None, "use either `keys` or `prefix`/`start`/`end`"))
            }
            (Some(keys), _) => Selection::Keys(
                keys.iter()
                    .enumerate()
                    .map(|(i, k)| match k {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
                        other => Err(invalid(
                            None,
                            format!("keys[{i}] is {other}; keys are strings or integers"),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (None, Some(_)) if self.start.is_some() || self.end.is_some() => {
                return Err(invalid(None, "use either `prefix` or `start`/`end`"))
            }
            (None, Some(p)) => Selection::Range(
                Bound::Included(p.as_bytes().to_vec()),
                snapkv_format::prefix_successor(p.as_bytes())
                    .map_or(Bound::Unbounded, Bound::Excluded),
            ),
            (None, None) => Selection::Range(
                self.start
                    .as_ref()
                    .map_or(Bound::Unbounded, |s| Bound::Included(s.as_bytes().to_vec())),
                self.end
                    .as_ref()
                    .map_or(Bound::Unbounded, |e| Bound::Excluded(e.as_bytes().to_vec())),
            ),
        };
        let filter = self
            .filter
            .as_ref()
            .map(|f| compile_filter(&schema, f))
            .transpose()?;
        let aggregates = self
            .aggregates
            .iter()
            .map(|(name, spec)| Ok((name.clone(), compile_agg(&schema, name, spec)?)))
            .collect::<Result<Vec<_>, QueryError>>()?;
        let group_by = self
            .group_by
            .iter()
            .map(|g| schema.field(g))
            .collect::<Result<Vec<_>, _>>()?;
        let grouped = !aggregates.is_empty() || !group_by.is_empty();
        if grouped && self.fields.is_some() {
            return Err(invalid(
                None,
                "`fields` picks fields of rows; with `group_by` or `aggregates` the answer's fields are those",
            ));
        }
        let fields = self
            .fields
            .as_ref()
            .map(|fs| {
                fs.iter()
                    .map(|f| schema.field(f))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        // Ordering is by the answer's fields.
        let out: HashSet<&str> = if grouped {
            group_by
                .iter()
                .map(|f| f.name.as_str())
                .chain(aggregates.iter().map(|(n, _)| n.as_str()))
                .collect()
        } else {
            match &fields {
                Some(fs) => fs.iter().map(|f| f.name.as_str()).chain(["key"]).collect(),
                None => ["key"].into_iter().collect(),
            }
        };
        for o in &self.order_by {
            if !out.contains(o.field.as_str()) {
                let mut names: Vec<&str> = out.iter().copied().collect();
                names.sort_unstable();
                return Err(invalid(
                    Some(&o.field),
                    format!("order_by names a field of the answer: {}", names.join(", ")),
                ));
            }
        }
        let value_names = if !grouped && fields.is_none() {
            None
        } else {
            let mut used: Vec<&Field> = Vec::new();
            used.extend(fields.iter().flatten());
            used.extend(&group_by);
            if let Some(f) = &filter {
                f.fields(&mut used);
            }
            used.extend(aggregates.iter().filter_map(|(_, a)| a.field()));
            used.extend(vectors.iter().map(|v| &v.field));
            Some(value_members(used))
        };
        Ok(Plan {
            selection,
            vectors,
            filter,
            fields,
            group_by,
            aggregates,
            order_by: self.order_by.clone(),
            limit: self.limit,
            value_names,
        })
    }
}

/// Some fields of each value (`?fields=a,b.c` on lookups and scans): a JSON object of the
/// fields named, each under its name (a path's name is the path), null where absent. Key
/// columns are fields too.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The fields, by name (the answer's order), each name once.
    fields: Vec<Field>,
    /// The top-level members of values the fields read: only these are read.
    members: Vec<String>,
    /// For each field read from the value, its member's position in `members`.
    member_of: Vec<Option<usize>>,
}

impl Projection {
    /// Checks `names` (comma-separated) against a snapshot's metadata.
    pub fn new(meta: &Metadata, names: &str) -> Result<Projection, QueryError> {
        let schema = Schema::new(meta);
        if !schema.json {
            return Err(invalid(
                None,
                "fields can be picked from JSON values only; this dataset's values are not JSON",
            ));
        }
        let fields = names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| schema.field(n))
            .collect::<Result<Vec<_>, _>>()?;
        if fields.is_empty() {
            return Err(invalid(None, "`fields` names no field"));
        }
        let mut fields = fields;
        fields.sort_by(|a, b| a.name.cmp(&b.name));
        fields.dedup_by(|a, b| a.name == b.name);
        let members = value_members(&fields);
        let member_of = fields
            .iter()
            .map(|f| match &f.source {
                Source::Value(path) => members.iter().position(|m| *m == path[0]),
                _ => None,
            })
            .collect();
        Ok(Projection {
            fields,
            members,
            member_of,
        })
    }

    /// The fields of the row `key` → `value`, as a JSON object. A top-level member is copied
    /// as it is stored, without parsing it; a path into one parses that member only.
    pub fn apply(&self, key: &[u8], value: &[u8]) -> Bytes {
        let raw: Option<Vec<Option<&serde_json::value::RawValue>>> = if self.members.is_empty() {
            None
        } else {
            pick(value, &self.members)
        };
        let member = |i: Option<usize>| raw.as_ref().zip(i).and_then(|(r, i)| r[i]);
        let row = Row {
            key,
            value: None,
            computed: Vec::new(),
        };
        let mut out = Vec::with_capacity(16 + value.len() / 2);
        out.push(b'{');
        for (n, (f, &i)) in self.fields.iter().zip(&self.member_of).enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, &f.name);
            out.push(b':');
            match (&f.source, member(i)) {
                (Source::Value(path), Some(m)) if path.len() == 1 => {
                    out.extend_from_slice(m.get().as_bytes())
                }
                (Source::Value(path), Some(m)) => {
                    let whole: Value = serde_json::from_str(m.get()).unwrap_or(Value::Null);
                    let v = path[1..].iter().try_fold(&whole, |v, p| v.get(p));
                    let _ = serde_json::to_writer(&mut out, v.unwrap_or(&Value::Null));
                }
                (Source::Value(_), None) => out.extend_from_slice(b"null"),
                _ => {
                    let _ = serde_json::to_writer(&mut out, &row.get(f));
                }
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// What a query read and how long it took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    /// Rows read from the snapshot.
    pub rows_scanned: u64,
    /// Rows that passed the filter.
    pub rows_matched: u64,
    /// Bytes of keys and values read.
    pub bytes_read: u64,
    /// Milliseconds spent.
    pub elapsed_ms: f64,
}

/// A query's answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    /// The rows: projected rows (`key` and the fields asked for, or `key` and `value`), or one
    /// per group with its `group_by` fields and aggregates.
    pub rows: Vec<Map<String, Value>>,
    /// What it cost.
    pub stats: Stats,
    /// The rows' columns, in order (also when there are no rows).
    #[serde(skip)]
    pub columns: Vec<String>,
}

impl Answer {
    /// The rows as an Arrow IPC stream: one record batch, a column per answer column, typed
    /// from the values (numbers that are all integers are `Int64`, otherwise `Float64`;
    /// objects are structs, arrays lists). A column whose values have no common Arrow type
    /// (an object in one row, a number in another) is `Utf8` holding each value's JSON text;
    /// a column with no values is of type `Null`. The schema's metadata holds `snapkv.stats`
    /// (the stats as JSON) and `snapkv.version` when `version` is given.
    pub fn to_arrow_ipc(&self, version: Option<&str>) -> Result<Vec<u8>, QueryError> {
        use arrow_schema::{DataType, Field as ArrowField, Schema as ArrowSchema};
        use std::sync::Arc;
        let mut columns: Vec<String> = Vec::new();
        let names = self.rows.iter().flat_map(|row| row.keys());
        for name in self.columns.iter().chain(names) {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
        let mut fields = Vec::with_capacity(columns.len());
        let mut as_text = Vec::with_capacity(columns.len());
        for name in &columns {
            let values = self.rows.iter().map(|row| {
                let mut one = Map::new();
                one.insert(name.clone(), row.get(name).cloned().unwrap_or(Value::Null));
                Ok(Value::Object(one))
            });
            let inferred = arrow_json::reader::infer_json_schema_from_iterator(values)
                .ok()
                .and_then(|s| s.field_with_name(name).ok().cloned());
            match inferred {
                Some(f) => {
                    fields.push(f.with_nullable(true));
                    as_text.push(false);
                }
                None => {
                    fields.push(ArrowField::new(name, DataType::Utf8, true));
                    as_text.push(true);
                }
            }
        }
        let mut metadata = std::collections::HashMap::new();
        metadata.insert(
            "snapkv.stats".to_owned(),
            serde_json::to_string(&self.stats).unwrap_or_default(),
        );
        if let Some(v) = version {
            metadata.insert("snapkv.version".to_owned(), v.to_owned());
        }
        let schema = Arc::new(ArrowSchema::new_with_metadata(fields, metadata));
        let mut decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_batch_size(self.rows.len().max(1))
            .with_coerce_primitive(true)
            .build_decoder()?;
        let rows: Vec<Map<String, Value>> = self
            .rows
            .iter()
            .map(|row| {
                columns
                    .iter()
                    .zip(&as_text)
                    .map(|(name, &text)| {
                        let v = row.get(name).cloned().unwrap_or(Value::Null);
                        let v = match v {
                            Value::Null => Value::Null,
                            v if text => Value::String(v.to_string()),
                            v => v,
                        };
                        (name.clone(), v)
                    })
                    .collect()
            })
            .collect();
        decoder.serialize(&rows)?;
        let batch = match decoder.flush()? {
            Some(batch) => batch,
            None => arrow_array::RecordBatch::new_empty(schema.clone()),
        };
        let mut out = Vec::new();
        let mut writer = arrow_ipc::writer::StreamWriter::try_new(&mut out, &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        drop(writer);
        Ok(out)
    }
}

/// One row being evaluated.
struct Row<'a> {
    key: &'a [u8],
    value: Option<Value>,
    /// The query's scores, in order.
    computed: Vec<Value>,
}

impl Row<'_> {
    fn get(&self, f: &Field) -> Value {
        match &f.source {
            Source::Key => Value::String(String::from_utf8_lossy(self.key).into_owned()),
            Source::KeyPart { i, n, kind } => {
                let text = String::from_utf8_lossy(self.key); // borrowed when UTF-8
                let Some(part) = text.splitn(*n, '/').nth(*i) else {
                    return Value::Null;
                };
                match kind {
                    Kind::Number => part
                        .parse::<i64>()
                        .map(Value::from)
                        .or_else(|_| part.parse::<f64>().map(Value::from))
                        .unwrap_or_else(|_| Value::String(part.to_owned())),
                    _ => Value::String(part.to_owned()),
                }
            }
            Source::Computed(i) => self.computed.get(*i).cloned().unwrap_or(Value::Null),
            Source::Value(path) => {
                let mut v = self.value.as_ref();
                for p in path {
                    v = v.and_then(|v| v.get(p));
                }
                v.cloned().unwrap_or(Value::Null)
            }
        }
    }
}

/// The top-level members of values that `fields` read, each once.
fn value_members<'a>(fields: impl IntoIterator<Item = &'a Field>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for f in fields {
        if let Source::Value(path) = &f.source {
            if !names.contains(&path[0]) {
                names.push(path[0].clone());
            }
        }
    }
    names
}

/// The members `names` of the JSON object `value`, parsed; the others are checked and skipped
/// without building them. `None` when `value` is not a JSON object.
fn members(value: &[u8], names: &[String]) -> Option<Value> {
    let picked = pick::<Value>(value, names)?;
    let members = names
        .iter()
        .zip(picked)
        .filter_map(|(n, v)| Some((n.clone(), v?)));
    Some(Value::Object(members.collect()))
}

/// The members `names` of the JSON object `value`, by position in `names` (`None` where
/// absent), as `T`; the others are checked and skipped without building them. `None` when
/// `value` is not a JSON object. A name given twice in `value` takes its last member.
fn pick<'de, T: serde::Deserialize<'de>>(
    value: &'de [u8],
    names: &[String],
) -> Option<Vec<Option<T>>> {
    /// A member's name: its position in `names`, if there.
    struct Name<'n>(&'n [String]);
    impl<'de> serde::de::DeserializeSeed<'de> for Name<'_> {
        type Value = Option<usize>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl serde::de::Visitor<'_> for Name<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a member name")
        }
        fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
            Ok(self.0.iter().position(|n| n == name))
        }
    }
    struct Picked<'n, T>(&'n [String], std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for Picked<'_, T> {
        type Value = Vec<Option<T>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out: Vec<Option<T>> = self.0.iter().map(|_| None).collect();
            while let Some(found) = map.next_key_seed(Name(self.0))? {
                match found {
                    Some(i) => out[i] = Some(map.next_value::<T>()?),
                    None => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(value);
    let picked =
        serde::Deserializer::deserialize_map(&mut de, Picked(names, std::marker::PhantomData))
            .ok()?;
    de.end().ok()?;
    Some(picked)
}

/// Orders two JSON values of one kind: numbers, strings and booleans; `None` otherwise.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Filter {
    /// Adds the fields the filter reads to `out`.
    fn fields<'a>(&'a self, out: &mut Vec<&'a Field>) {
        match self {
            Filter::And(fs) | Filter::Or(fs) => fs.iter().for_each(|f| f.fields(out)),
            Filter::Not(f) => f.fields(out),
            Filter::Cmp(field, ..) | Filter::In(field, _) | Filter::IsNull(field, _) => {
                out.push(field)
            }
        }
    }

    fn matches(&self, row: &Row<'_>) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(row)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(row)),
            Filter::Not(f) => !f.matches(row),
            Filter::Cmp(field, op, literal) => {
                let Some(o) = compare(&row.get(field), literal) else {
                    return false;
                };
                match op {
                    Op::Eq => o == Ordering::Equal,
                    Op::Ne => o != Ordering::Equal,
                    Op::Lt => o == Ordering::Less,
                    Op::Le => o != Ordering::Greater,
                    Op::Gt => o == Ordering::Greater,
                    Op::Ge => o != Ordering::Less,
                }
            }
            Filter::In(field, values) => {
                let v = row.get(field);
                values
                    .iter()
                    .any(|x| compare(&v, x) == Some(Ordering::Equal))
            }
            Filter::IsNull(field, null) => row.get(field).is_null() == *null,
        }
    }
}

/// The running state of one aggregate in one group.
enum Acc {
    Count(u64),
    /// Integer sum while every value is an integer, then a float sum.
    Sum(i128, f64, bool),
    Avg(f64, u64),
    Extreme(Option<Value>),
    Distinct(HashSet<String>),
    Values(Vec<f64>),
    /// Min-heap of (score, key) of the k largest.
    Top(std::collections::BinaryHeap<std::cmp::Reverse<(Score, String)>>),
}

/// An f64 ordered totally (NaN never enters: it is not a JSON number).
#[derive(Debug, Clone, Copy)]
struct Score(f64);
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Agg {
    fn start(&self) -> Acc {
        match self {
            Agg::Count(_) => Acc::Count(0),
            Agg::Sum(_) => Acc::Sum(0, 0.0, true),
            Agg::Avg(_) => Acc::Avg(0.0, 0),
            Agg::Min(_) | Agg::Max(_) => Acc::Extreme(None),
            Agg::CountDistinct(_) => Acc::Distinct(HashSet::new()),
            Agg::Percentile(..) => Acc::Values(Vec::new()),
            Agg::TopK { .. } => Acc::Top(std::collections::BinaryHeap::new()),
        }
    }

    /// The field the aggregate reads, if any.
    fn field(&self) -> Option<&Field> {
        match self {
            Agg::Count(f) => f.as_ref(),
            Agg::Sum(f)
            | Agg::Avg(f)
            | Agg::Min(f)
            | Agg::Max(f)
            | Agg::CountDistinct(f)
            | Agg::Percentile(f, _) => Some(f),
            Agg::TopK { by, .. } => Some(by),
        }
    }

    fn add(&self, acc: &mut Acc, row: &Row<'_>) {
        match (self, acc) {
            (Agg::Count(None), Acc::Count(n)) => *n += 1,
            (Agg::Count(Some(f)), Acc::Count(n)) => *n += u64::from(!row.get(f).is_null()),
            (Agg::Sum(f), Acc::Sum(i, x, ints)) => {
                if let Value::Number(v) = row.get(f) {
                    match v.as_i64() {
                        Some(v) if *ints => *i += i128::from(v),
                        _ => {
                            if *ints {
                                *x = *i as f64;
                                *ints = false;
                            }
                            *x += v.as_f64().unwrap_or(0.0);
                        }
                    }
                }
            }
            (Agg::Avg(f), Acc::Avg(s, n)) => {
                if let Some(v) = row.get(f).as_f64() {
                    *s += v;
                    *n += 1;
                }
            }
            (Agg::Min(f) | Agg::Max(f), Acc::Extreme(best)) => {
                let v = row.get(f);
                if v.is_null() {
                    return;
                }
                let want = if matches!(self, Agg::Min(_)) {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                let better = best.as_ref().is_none_or(|b| compare(&v, b) == Some(want));
                if better {
                    *best = Some(v);
                }
            }
            (Agg::CountDistinct(f), Acc::Distinct(seen)) => {
                let v = row.get(f);
                if !v.is_null() {
                    seen.insert(v.to_string());
                }
            }
            (Agg::Percentile(f, _), Acc::Values(vs)) => {
                if let Some(v) = row.get(f).as_f64() {
                    vs.push(v);
                }
            }
            (Agg::TopK { by, k }, Acc::Top(heap)) => {
                if let Some(v) = row.get(by).as_f64() {
                    // The smallest held goes when a larger score (or an equal one with a
                    // larger key) comes; the key is copied only then.
                    let enters = heap.len() < *k
                        || heap.peek().is_some_and(|m| {
                            let (Score(low), low_key) = &m.0;
                            match Score(v).cmp(&Score(*low)) {
                                Ordering::Greater => true,
                                Ordering::Less => false,
                                Ordering::Equal => *String::from_utf8_lossy(row.key) > **low_key,
                            }
                        });
                    if enters {
                        if heap.len() >= *k {
                            heap.pop();
                        }
                        let item = (Score(v), String::from_utf8_lossy(row.key).into_owned());
                        heap.push(std::cmp::Reverse(item));
                    }
                }
            }
            _ => unreachable!("an accumulator of another aggregate"),
        }
    }

    /// Adds `other`, the accumulator of other rows, to `acc`.
    fn merge(&self, acc: &mut Acc, other: Acc) {
        match (acc, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(i, x, ints), Acc::Sum(j, y, other_ints)) => {
                if *ints && other_ints {
                    *i += j;
                } else {
                    let mine = if *ints { *i as f64 } else { *x };
                    *x = mine + if other_ints { j as f64 } else { y };
                    *ints = false;
                }
            }
            (Acc::Avg(s, n), Acc::Avg(t, m)) => {
                *s += t;
                *n += m;
            }
            (Acc::Extreme(best), Acc::Extreme(Some(v))) => {
                let want = if matches!(self, Agg::Min(_)) {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                if best.as_ref().is_none_or(|b| compare(&v, b) == Some(want)) {
                    *best = Some(v);
                }
            }
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b),
            (Acc::Values(a), Acc::Values(b)) => a.extend(b),
            (Acc::Top(a), Acc::Top(b)) => {
                let k = match self {
                    Agg::TopK { k, .. } => *k,
                    _ => usize::MAX,
                };
                for item in b {
                    a.push(item);
                    if a.len() > k {
                        a.pop();
                    }
                }
            }
            _ => {}
        }
    }

    fn finish(&self, acc: Acc) -> Value {
        match (self, acc) {
            (_, Acc::Count(n)) => n.into(),
            (_, Acc::Sum(i, _, true)) => {
                i64::try_from(i).map_or(Value::from(i as f64), Value::from)
            }
            (_, Acc::Sum(_, x, false)) => x.into(),
            (_, Acc::Avg(s, n)) => {
                if n == 0 {
                    Value::Null
                } else {
                    (s / n as f64).into()
                }
            }
            (_, Acc::Extreme(v)) => v.unwrap_or(Value::Null),
            (_, Acc::Distinct(seen)) => seen.len().into(),
            (Agg::Percentile(_, p), Acc::Values(mut vs)) => {
                if vs.is_empty() {
                    return Value::Null;
                }
                vs.sort_by(f64::total_cmp);
                // Nearest rank: the smallest value with at least p% of the values at or below it.
                let rank = ((p / 100.0) * vs.len() as f64).ceil().max(1.0) as usize;
                vs[rank.min(vs.len()) - 1].into()
            }
            (Agg::TopK { by, .. }, Acc::Top(heap)) => {
                let mut top: Vec<(Score, String)> = heap.into_iter().map(|r| r.0).collect();
                top.sort_by(|a, b| b.cmp(a));
                // Whole numbers as integers, as integer fields hold them.
                let number = |x: f64| -> Value {
                    if x.fract() == 0.0 && x.abs() < 9e15 {
                        Value::from(x as i64)
                    } else {
                        Value::from(x)
                    }
                };
                top.into_iter()
                    .map(|(s, k)| serde_json::json!({"key": k, by.name.clone(): number(s.0)}))
                    .collect()
            }
            _ => Value::Null,
        }
    }
}

/// Tracks what a query has read against its limits.
/// What the threads of one query have read together, added to every 256 rows.
#[derive(Default)]
struct Shared {
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

/// One thread's reading, checked against the query's limits: its own counts plus what every
/// thread had added to `shared` when it last looked (exact with one thread).
struct Budget<'l> {
    limits: &'l Limits,
    started: Instant,
    stats: Stats,
    shared: &'l Shared,
    /// This thread's counts not yet added to `shared`.
    unshared: (u64, u64),
    /// `shared`'s totals when this thread last added to it, its own part included.
    seen: (u64, u64),
}

impl<'l> Budget<'l> {
    fn new(limits: &'l Limits, started: Instant, shared: &'l Shared) -> Budget<'l> {
        Budget {
            limits,
            started,
            stats: Stats::default(),
            shared,
            unshared: (0, 0),
            seen: (0, 0),
        }
    }

    fn read(&mut self, key: &[u8], value: &[u8]) -> Result<(), QueryError> {
        let bytes = (key.len() + value.len()) as u64;
        self.stats.rows_scanned += 1;
        self.stats.bytes_read += bytes;
        self.unshared.0 += 1;
        self.unshared.1 += bytes;
        if self.unshared.0 == 256 {
            self.share()?;
            if self.started.elapsed() > self.limits.max_time {
                return Err(QueryError::OverBudget {
                    limit: "max_time",
                    allowed: format!("{:?}", self.limits.max_time),
                });
            }
        }
        self.check(self.seen.0 + self.unshared.0, self.seen.1 + self.unshared.1)
    }

    /// Adds this thread's unshared counts to `shared`, and checks the totals.
    fn share(&mut self) -> Result<(), QueryError> {
        use std::sync::atomic::Ordering::Relaxed;
        let (rows, bytes) = std::mem::take(&mut self.unshared);
        self.seen = (
            self.shared.rows.fetch_add(rows, Relaxed) + rows,
            self.shared.bytes.fetch_add(bytes, Relaxed) + bytes,
        );
        self.check(self.seen.0, self.seen.1)
    }

    fn check(&self, rows: u64, bytes: u64) -> Result<(), QueryError> {
        let over = |limit, allowed: String| Err(QueryError::OverBudget { limit, allowed });
        if rows > self.limits.max_rows_scanned {
            return over(
                "max_rows_scanned",
                format!("{} rows", self.limits.max_rows_scanned),
            );
        }
        if bytes > self.limits.max_bytes_read {
            return over(
                "max_bytes_read",
                format!("{} bytes", self.limits.max_bytes_read),
            );
        }
        Ok(())
    }
}

/// One thread's evaluation of a query: its rows, or its groups with their accumulators.
struct Worker<'a> {
    plan: &'a Plan,
    limits: &'a Limits,
    budget: Budget<'a>,
    grouped: bool,
    /// Rows without ordering stop at the limit.
    early: bool,
    limit: usize,
    rows: Vec<Map<String, Value>>,
    groups: HashMap<Vec<u8>, (Vec<Value>, Vec<Acc>)>,
    /// The current row's group id, a buffer reused row to row.
    id: Vec<u8>,
}

impl Worker<'_> {
    /// Evaluates one row; `false` when no more rows are needed.
    fn visit(&mut self, key: &[u8], value: &Bytes) -> Result<bool, QueryError> {
        let plan = self.plan;
        self.budget.read(key, value)?;
        // Values of JSON datasets are JSON objects; one that does not parse is a null row.
        let parsed = match &plan.value_names {
            None => serde_json::from_slice::<Value>(value).ok(),
            Some(names) if names.is_empty() => None,
            Some(names) => members(value, names),
        };
        let mut row = Row {
            key,
            value: parsed,
            computed: Vec::new(),
        };
        row.computed = plan.vectors.iter().map(|v| v.score(&row)).collect();
        if let Some(f) = &plan.filter {
            if !f.matches(&row) {
                return Ok(true);
            }
        }
        self.budget.stats.rows_matched += 1;
        if self.grouped {
            let values: Vec<Value> = plan.group_by.iter().map(|g| row.get(g)).collect();
            // The group's id: its values' JSON.
            self.id.clear();
            let _ = serde_json::to_writer(&mut self.id, &values);
            let accs = match self.groups.get_mut(self.id.as_slice()) {
                Some((_, accs)) => accs,
                None => {
                    if self.groups.len() >= self.limits.max_groups {
                        return Err(too_many_groups(self.limits));
                    }
                    let accs = plan.aggregates.iter().map(|(_, a)| a.start()).collect();
                    &mut self
                        .groups
                        .entry(self.id.clone())
                        .or_insert((values, accs))
                        .1
                }
            };
            for ((_, agg), acc) in plan.aggregates.iter().zip(accs.iter_mut()) {
                agg.add(acc, &row);
            }
            return Ok(true);
        }
        let mut out = Map::new();
        out.insert(
            "key".into(),
            Value::String(String::from_utf8_lossy(key).into_owned()),
        );
        match &plan.fields {
            Some(fs) => {
                for f in fs {
                    out.insert(f.name.clone(), row.get(f));
                }
            }
            None => {
                out.insert("value".into(), row.value.clone().unwrap_or(Value::Null));
            }
        }
        if !self.early && self.rows.len() >= self.limits.max_groups {
            return Err(QueryError::OverBudget {
                limit: "max_groups",
                allowed: format!("{} rows held for ordering", self.limits.max_groups),
            });
        }
        self.rows.push(out);
        Ok(!(self.early && self.rows.len() >= self.limit))
    }

    /// Evaluates the rows of `shards` within the bounds, in key order.
    fn range(
        &mut self,
        shards: &Shards,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
    ) -> Result<(), QueryError> {
        for entry in shards.range(lower, upper) {
            let (k, v) = entry?;
            if !self.visit(&k, &v)? {
                break;
            }
        }
        self.budget.share()
    }

    /// Adds the groups of `other` (of the same query, other rows) to these.
    fn merge(&mut self, other: Worker<'_>) -> Result<(), QueryError> {
        let s = &mut self.budget.stats;
        s.rows_scanned += other.budget.stats.rows_scanned;
        s.rows_matched += other.budget.stats.rows_matched;
        s.bytes_read += other.budget.stats.bytes_read;
        for (id, (values, accs)) in other.groups {
            match self.groups.get_mut(&id) {
                Some((_, mine)) => {
                    for (((_, agg), a), b) in self.plan.aggregates.iter().zip(mine).zip(accs) {
                        agg.merge(a, b);
                    }
                }
                None => {
                    if self.groups.len() >= self.limits.max_groups {
                        return Err(too_many_groups(self.limits));
                    }
                    self.groups.insert(id, (values, accs));
                }
            }
        }
        Ok(())
    }
}

fn too_many_groups(limits: &Limits) -> QueryError {
    QueryError::OverBudget {
        limit: "max_groups",
        allowed: format!("{} groups", limits.max_groups),
    }
}

/// Runs a planned query over the rows of `shards` (those it holds), within `limits`. A grouped
/// query over a key range of many blocks reads parts of it on `limits.threads` threads.
pub fn run(shards: &Shards, plan: &Plan, limits: &Limits) -> Result<Answer, QueryError> {
    let started = Instant::now();
    let grouped = !plan.aggregates.is_empty() || !plan.group_by.is_empty();
    let limit = plan
        .limit
        .unwrap_or(if grouped { limits.max_rows } else { 100 });
    if limit > limits.max_rows {
        return Err(invalid(
            None,
            format!(
                "limit {limit} is over the most rows an answer holds, {}",
                limits.max_rows
            ),
        ));
    }
    let shared = Shared::default();
    let worker = || Worker {
        plan,
        limits,
        budget: Budget::new(limits, started, &shared),
        grouped,
        early: !grouped && plan.order_by.is_empty(),
        limit,
        rows: Vec::new(),
        groups: HashMap::new(),
        id: Vec::new(),
    };
    let mut w = worker();
    match &plan.selection {
        Selection::Keys(keys) => {
            let mut seen = HashSet::new();
            for k in keys {
                if !seen.insert(k) {
                    continue;
                }
                if let Some(v) = shards.get(k.as_bytes())? {
                    if !w.visit(k.as_bytes(), &v)? {
                        break;
                    }
                }
            }
            w.budget.share()?;
        }
        Selection::Range(lower, upper) => {
            let (lower, upper) = (
                lower.as_ref().map(Vec::as_slice),
                upper.as_ref().map(Vec::as_slice),
            );
            let cuts = if grouped && limits.threads > 1 {
                shards.split_range(lower, upper, limits.threads, MIN_BLOCKS_PER_THREAD)?
            } else {
                Vec::new()
            };
            if cuts.is_empty() {
                w.range(shards, lower, upper)?;
            } else {
                // Parts [lower, c1), [c1, c2), ..., [cn, upper), one per thread; this thread
                // reads the first.
                let mut bounds = vec![lower];
                bounds.extend(cuts.iter().map(|c| Bound::Included(&c[..])));
                let ends: Vec<Bound<&[u8]>> = cuts
                    .iter()
                    .map(|c| Bound::Excluded(&c[..]))
                    .chain(std::iter::once(upper))
                    .collect();
                let others = std::thread::scope(|scope| {
                    let handles: Vec<_> = bounds[1..]
                        .iter()
                        .zip(&ends[1..])
                        .map(|(&lo, &hi)| {
                            scope.spawn(move || {
                                let mut part = worker();
                                part.range(shards, lo, hi).map(|()| part)
                            })
                        })
                        .collect();
                    let first = w.range(shards, bounds[0], ends[0]);
                    let others: Vec<Result<Worker<'_>, QueryError>> = handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                        .collect();
                    first.map(|()| others)
                })?;
                for part in others {
                    w.merge(part?)?;
                }
            }
        }
    }
    let Worker {
        mut rows,
        groups,
        mut budget,
        ..
    } = w;
    if grouped {
        rows = groups
            .into_values()
            .map(|(values, accs)| {
                let mut out = Map::new();
                for (g, v) in plan.group_by.iter().zip(values) {
                    out.insert(g.name.clone(), v);
                }
                for ((name, agg), acc) in plan.aggregates.iter().zip(accs) {
                    out.insert(name.clone(), agg.finish(acc));
                }
                out
            })
            .collect();
        if plan.order_by.is_empty() {
            // Groups in the order of their values, so that answers are stable.
            let by: Vec<OrderBy> = plan
                .group_by
                .iter()
                .map(|g| OrderBy {
                    field: g.name.clone(),
                    desc: false,
                })
                .collect();
            rows.sort_by(|a, b| order(a, b, &by));
        }
    }
    if !plan.order_by.is_empty() {
        rows.sort_by(|a, b| order(a, b, &plan.order_by));
    }
    rows.truncate(limit);
    budget.stats.elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let columns = if grouped {
        let groups = plan.group_by.iter().map(|g| g.name.clone());
        groups
            .chain(plan.aggregates.iter().map(|(name, _)| name.clone()))
            .collect()
    } else {
        let fields = match &plan.fields {
            Some(fs) => fs.iter().map(|f| f.name.clone()).collect(),
            None => vec!["value".to_owned()],
        };
        std::iter::once("key".to_owned()).chain(fields).collect()
    };
    Ok(Answer {
        rows,
        stats: budget.stats,
        columns,
    })
}

/// Orders answer rows by `by`; values that do not compare (nulls, mixed kinds) go last.
fn order(a: &Map<String, Value>, b: &Map<String, Value>, by: &[OrderBy]) -> Ordering {
    for o in by {
        let (x, y) = (
            a.get(&o.field).unwrap_or(&Value::Null),
            b.get(&o.field).unwrap_or(&Value::Null),
        );
        let c = match (compare(x, y), x.is_null(), y.is_null()) {
            (Some(c), ..) => {
                if o.desc {
                    c.reverse()
                } else {
                    c
                }
            }
            (None, false, true) => Ordering::Less,
            (None, true, false) => Ordering::Greater,
            _ => Ordering::Equal,
        };
        if c != Ordering::Equal {
            return c;
        }
    }
    Ordering::Equal
}
