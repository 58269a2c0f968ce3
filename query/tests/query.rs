//! Queries over a real snapshot: the rows of a small catalogue keyed `COUNTRY/TITLE_ID`.

use serde_json::{json, Value};
use snapkv_format::{Metadata, Shards, Snapshot, SnapshotWriter, ValueEncoding, WriterOptions};
use snapkv_query::{run, Limits, Query, QueryError};

/// 300 titles over 3 countries: genre by title id, views = id * 10, a rating every other
/// title, a nested `meta.year`.
fn catalogue() -> Shards {
    let mut meta = Metadata::default();
    meta.value_encoding = ValueEncoding::Json;
    meta.key_columns = vec!["country".into(), "title_id".into()];
    meta.schema = Some(json!({"fields": [
        {"name": "country", "data_type": "Utf8"},
        {"name": "title_id", "data_type": "Int64"},
        {"name": "genre", "data_type": "Utf8"},
        {"name": "views", "data_type": "Int64"},
        {"name": "rating", "data_type": "Float64"},
        {"name": "kids", "data_type": "Boolean"},
        {"name": "meta", "data_type": {"Struct": []}},
    ]}));
    let mut rows = Vec::new();
    for (c, country) in ["DE", "SE", "US"].iter().enumerate() {
        for id in 0..100u64 {
            let id = id + 100 * c as u64;
            let genre = ["drama", "comedy", "horror"][(id % 3) as usize];
            let mut v = json!({"genre": genre, "views": id * 10, "kids": id % 5 == 0,
                               "meta": {"year": 2000 + id % 20}});
            if id % 2 == 0 {
                v["rating"] = json!(id as f64 / 10.0);
            }
            rows.push((format!("{country}/{id}"), v.to_string()));
        }
    }
    rows.sort();
    let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
    for (k, v) in &rows {
        w.insert(k.as_bytes(), v.as_bytes()).unwrap();
    }
    Shards::single(Snapshot::open(w.finish().unwrap().0).unwrap())
}

fn query(shards: &Shards, q: Value) -> Result<Vec<Value>, QueryError> {
    query_with(shards, q, &Limits::default())
}

fn query_with(shards: &Shards, q: Value, limits: &Limits) -> Result<Vec<Value>, QueryError> {
    let plan = Query::parse(q.to_string().as_bytes())?.plan(shards.shards()[0].metadata())?;
    let answer = run(shards, &plan, limits)?;
    Ok(answer.rows.into_iter().map(Value::Object).collect())
}

fn invalid(shards: &Shards, q: Value) -> String {
    match query(shards, q) {
        Err(e @ QueryError::Invalid { .. }) => e.to_string(),
        other => panic!("expected an invalid query, got {other:?}"),
    }
}

#[test]
fn the_minimum_contract() {
    let s = catalogue();
    let rows = query(
        &s,
        json!({"prefix": "SE/", "filter": {"views": {">": 1100}}, "group_by": ["genre"],
               "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"}},
               "order_by": [{"field": "total", "desc": true}], "limit": 10}),
    )
    .unwrap();
    // SE holds ids 100..200; views > 1100 keeps ids 111..199.
    let mut expected: Vec<(String, u64, u64)> = ["drama", "comedy", "horror"]
        .iter()
        .enumerate()
        .map(|(g, name)| {
            let ids: Vec<u64> = (111..200).filter(|id| id % 3 == g as u64).collect();
            (
                name.to_string(),
                ids.iter().map(|i| i * 10).sum(),
                ids.len() as u64,
            )
        })
        .collect();
    expected.sort_by_key(|e| std::cmp::Reverse(e.1));
    let got: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["genre"].as_str().unwrap().to_owned(),
                r["total"].as_u64().unwrap(),
                r["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn filters_combine_and_compare_by_kind() {
    let s = catalogue();
    let keys = |q: Value| -> Vec<String> {
        query(&s, q)
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_owned())
            .collect()
    };
    // Key columns compare as their type: title_id is a number.
    assert_eq!(
        keys(json!({"filter": {"title_id": {">=": 298}}})),
        ["US/298", "US/299"]
    );
    assert_eq!(
        keys(json!({"filter": {"and": [{"country": {"=": "DE"}}, {"title_id": {"<": 3}}]}})),
        ["DE/0", "DE/1", "DE/2"]
    );
    assert_eq!(
        keys(json!({"filter": {"or": [{"title_id": {"in": [5, 250]}}, {"views": {"=": 2990}}]}})),
        ["DE/5", "US/250", "US/299"]
    );
    // Missing fields are null: they match `is null` and no comparison.
    let unrated =
        keys(json!({"prefix": "DE/", "filter": {"rating": {"is null": true}}, "limit": 1000}));
    assert_eq!(unrated.len(), 50);
    let rated_low =
        keys(json!({"prefix": "DE/", "filter": {"not": {"rating": {">=": 0.5}}}, "limit": 1000}));
    assert_eq!(rated_low.len(), 50 + 3, "{rated_low:?}"); // unrated, and ids 0, 2, 4
                                                          // Nested fields by path, several fields in one filter: all must hold.
    assert_eq!(
        keys(json!({"filter": {"meta.year": {"=": 2015}, "kids": {"=": true}}, "limit": 3})),
        ["DE/15", "DE/35", "DE/55"]
    );
}

#[test]
fn aggregates() {
    let s = catalogue();
    let rows = query(
        &s,
        json!({"group_by": ["country"], "aggregates": {
            "n": {"count": "*"}, "rated": {"count": "rating"}, "avg": {"avg": "views"},
            "min": {"min": "views"}, "max": {"max": "genre"}, "genres": {"count_distinct": "genre"},
            "p50": {"percentile": {"field": "views", "p": 50}},
            "top": {"top_k": {"by": "views", "k": 2}}}}),
    )
    .unwrap();
    assert_eq!(rows.len(), 3);
    let de = &rows[0];
    assert_eq!(de["country"], "DE");
    assert_eq!(
        (de["n"].as_u64(), de["rated"].as_u64()),
        (Some(100), Some(50))
    );
    assert_eq!(de["avg"].as_f64(), Some(495.0));
    assert_eq!(
        (de["min"].as_u64(), de["max"].as_str()),
        (Some(0), Some("horror"))
    );
    assert_eq!(de["genres"], 3);
    assert_eq!(de["p50"].as_f64(), Some(490.0));
    assert_eq!(
        de["top"],
        json!([{"key": "DE/99", "views": 990}, {"key": "DE/98", "views": 980}])
    );
    // Without group_by: one row over everything; a part of the key groups too.
    let all = query(&s, json!({"aggregates": {"sum": {"sum": "views"}}})).unwrap();
    assert_eq!(
        all,
        [json!({"sum": (0..300u64).map(|i| i * 10).sum::<u64>()})]
    );
    let years = query(
        &s,
        json!({"group_by": ["meta.year"], "aggregates": {"n": {"count": "*"}},
                                  "order_by": [{"field": "meta.year", "desc": true}], "limit": 2}),
    )
    .unwrap();
    assert_eq!(
        years,
        [
            json!({"meta.year": 2019, "n": 15}),
            json!({"meta.year": 2018, "n": 15})
        ]
    );
}

#[test]
fn rows_are_projected_ordered_and_limited() {
    let s = catalogue();
    let rows = query(&s, json!({"keys": ["SE/150", "XX/1", "DE/7", 7], "fields": ["views", "meta.year", "title_id"]})).unwrap();
    assert_eq!(
        rows,
        [
            json!({"key": "SE/150", "views": 1500, "meta.year": 2010, "title_id": 150}),
            json!({"key": "DE/7", "views": 70, "meta.year": 2007, "title_id": 7}),
        ]
    );
    let top = query(
        &s,
        json!({"filter": {"genre": {"=": "horror"}}, "fields": ["views"],
                               "order_by": [{"field": "views", "desc": true}], "limit": 2}),
    )
    .unwrap();
    assert_eq!(
        top,
        [
            json!({"key": "US/299", "views": 2990}),
            json!({"key": "US/296", "views": 2960})
        ]
    );
    let whole = query(&s, json!({"start": "US/", "limit": 1})).unwrap();
    assert_eq!(whole[0]["key"], "US/200");
    assert_eq!(whole[0]["value"]["genre"], "horror");
    assert_eq!(
        query(&s, json!({})).unwrap().len(),
        100,
        "100 rows by default"
    );
}

#[test]
fn bad_queries_name_the_field() {
    let s = catalogue();
    for (q, says) in [
        (json!({"filter": {"vews": {">": 1}}}), "field \"vews\": no such field; the fields are key, country, genre, kids, meta, rating, title_id, views"),
        (json!({"filter": {"views": {">": "many"}}}), "field \"views\": holds numbers, compared with \"many\""),
        (json!({"filter": {"genre": {"~": "d"}}}), "field \"genre\": unknown operator \"~\""),
        (json!({"filter": {"kids": {"<": true}}}), "field \"kids\": < does not apply to booleans"),
        (json!({"filter": {"rating": {"=": null}}}), "field \"rating\": = null never matches"),
        (json!({"aggregates": {"s": {"sum": "genre"}}}), "field \"genre\": sum needs numbers"),
        (json!({"aggregates": {"s": {"median": "views"}}}), "aggregate \"s\": expected one of"),
        (json!({"fields": ["views"], "order_by": [{"field": "genre"}]}), "field \"genre\": order_by names a field of the answer: key, views"),
        (json!({"keys": ["a"], "prefix": "b"}), "use either `keys` or"),
        (json!({"prefix": "a", "end": "b"}), "use either `prefix` or"),
        (json!({"fields": ["genre"], "group_by": ["genre"]}), "`fields` picks fields of rows"),
        (json!({"limt": 3}), "not a query: unknown field `limt`"),
    ] {
        let e = invalid(&s, q.clone());
        assert!(e.contains(says), "{q}: {e}");
    }
}

#[test]
fn limits_refuse_instead_of_working_on() {
    let s = catalogue();
    let mut limits = Limits::default();
    limits.max_rows_scanned = 50;
    match query_with(&s, json!({"aggregates": {"n": {"count": "*"}}}), &limits) {
        Err(QueryError::OverBudget { limit, .. }) => assert_eq!(limit, "max_rows_scanned"),
        other => panic!("{other:?}"),
    }
    // A prefix within the limit answers.
    assert_eq!(
        query_with(
            &s,
            json!({"start": "DE/10", "end": "DE/2", "aggregates": {"n": {"count": "*"}}}),
            &limits
        )
        .unwrap(),
        [json!({"n": 10})]
    );
    let mut limits = Limits::default();
    limits.max_groups = 10;
    match query_with(
        &s,
        json!({"group_by": ["title_id"], "aggregates": {"n": {"count": "*"}}}),
        &limits,
    ) {
        Err(QueryError::OverBudget { limit, .. }) => assert_eq!(limit, "max_groups"),
        other => panic!("{other:?}"),
    }
    let e = query(&s, json!({"limit": 20000})).unwrap_err();
    assert!(e.to_string().contains("over the most rows"), "{e}");
}

/// Items with 3-dimensional embeddings.
fn embeddings() -> Shards {
    let mut meta = Metadata::default();
    meta.value_encoding = ValueEncoding::Json;
    meta.key_columns = vec!["item".into()];
    meta.schema = Some(json!({"fields": [
        {"name": "item", "data_type": "Utf8"},
        {"name": "emb", "data_type": {"List": {"name": "item", "data_type": "Float64"}}},
        {"name": "kind", "data_type": "Utf8"},
    ]}));
    let items = [
        ("a", json!([1.0, 0.0, 0.0]), "x"),
        ("b", json!([0.0, 2.0, 0.0]), "x"),
        ("c", json!([1.0, 1.0, 0.0]), "y"),
        ("d", json!([0.0, 0.0, 0.0]), "y"),
        ("e", json!([1.0, 2.0]), "y"),
    ];
    let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
    for (k, emb, kind) in items {
        w.insert(
            k.as_bytes(),
            json!({"emb": emb, "kind": kind}).to_string().as_bytes(),
        )
        .unwrap();
    }
    Shards::single(Snapshot::open(w.finish().unwrap().0).unwrap())
}

#[test]
fn vectors_score_rows() {
    let s = embeddings();
    // Rank the rows of an mget by cosine similarity to a request vector.
    let rows = query(
        &s,
        json!({"keys": ["a", "b", "c", "d", "e"],
               "vectors": {"score": {"cosine": {"field": "emb", "vector": [1.0, 1.0, 0.0]}}},
               "fields": ["score"], "order_by": [{"field": "score", "desc": true}], "limit": 3}),
    )
    .unwrap();
    let scores: Vec<(String, f64)> = rows
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_owned(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let half = 0.5f64.sqrt();
    assert_eq!(scores[0].0, "c");
    assert!((scores[0].1 - 1.0).abs() < 1e-12);
    assert!(
        scores[1..]
            .iter()
            .all(|(k, s)| (k == "a" || k == "b") && (s - half).abs() < 1e-12),
        "{scores:?}"
    );
    // A zero vector and one of another length have no score (null, last).
    let all = query(
        &s,
        json!({"vectors": {"d": {"dot": {"field": "emb", "vector": [1, 2, 3]}}},
                               "fields": ["d"], "order_by": [{"field": "d", "desc": true}]}),
    )
    .unwrap();
    let dots: Vec<Value> = all.iter().map(|r| r["d"].clone()).collect();
    assert_eq!(
        dots,
        [json!(4.0), json!(3.0), json!(1.0), json!(0.0), Value::Null]
    );
    // Scores filter and aggregate like fields.
    let top = query(
        &s,
        json!({"vectors": {"d": {"dot": {"field": "emb", "vector": [1, 2, 3]}}},
                               "filter": {"d": {">=": 1}}, "group_by": ["kind"],
                               "aggregates": {"best": {"top_k": {"by": "d", "k": 1}}}}),
    )
    .unwrap();
    assert_eq!(
        top,
        [
            json!({"kind": "x", "best": [{"key": "b", "d": 4}]}),
            json!({"kind": "y", "best": [{"key": "c", "d": 3}]})
        ]
    );
    for (q, says) in [
        (
            json!({"vectors": {"s": {"cosine": {"field": "kind", "vector": [1]}}}}),
            "field \"kind\": a vector field is an array",
        ),
        (
            json!({"vectors": {"s": {"cosine": {"field": "emb", "vector": [0, 0]}}}}),
            "not all zeros",
        ),
        (
            json!({"vectors": {"s": {"cosine": {"field": "emb", "vector": []}}}}),
            "1 to 65,536 numbers",
        ),
        (
            json!({"vectors": {"kind": {"dot": {"field": "emb", "vector": [1]}}}}),
            "must not be a field",
        ),
        (
            json!({"vectors": {"s": {"l2": {"field": "emb", "vector": [1]}}}}),
            "unknown operation \"l2\"",
        ),
    ] {
        let e = invalid(&s, q.clone());
        assert!(e.contains(says), "{q}: {e}");
    }
}

/// The answer to `q` (the query's text: a `Value` would not keep the order of its members)
/// as Arrow.
fn arrow(shards: &Shards, q: &str) -> arrow_array::RecordBatch {
    let plan = Query::parse(q.as_bytes())
        .unwrap()
        .plan(shards.shards()[0].metadata())
        .unwrap();
    let answer = run(shards, &plan, &Limits::default()).unwrap();
    let ipc = answer.to_arrow_ipc(Some("v1")).unwrap();
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let schema = reader.schema();
    assert_eq!(schema.metadata()["snapkv.version"], "v1");
    let stats: Value = serde_json::from_str(&schema.metadata()["snapkv.stats"]).unwrap();
    assert_eq!(stats["rows_scanned"], answer.stats.rows_scanned);
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

fn names(b: &arrow_array::RecordBatch) -> Vec<String> {
    b.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect()
}

#[test]
fn arrow_answers_are_typed_columns_in_query_order() {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_schema::DataType;
    let shards = catalogue();
    let grouped = r#"{"prefix": "SE/", "group_by": ["genre"],
        "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"},
                       "avg_rating": {"avg": "rating"}},
        "order_by": [{"field": "total", "desc": true}]}"#;
    let b = arrow(&shards, grouped);
    assert_eq!(names(&b), ["genre", "total", "n", "avg_rating"]);
    assert_eq!(b.num_rows(), 3);
    let rows = query(&shards, serde_json::from_str(grouped).unwrap()).unwrap();
    let genre = b.column(0).as_string::<i32>();
    let total = b.column(1).as_primitive::<Int64Type>();
    let avg = b.column(3).as_primitive::<Float64Type>();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(genre.value(i), row["genre"].as_str().unwrap());
        assert_eq!(total.value(i), row["total"].as_i64().unwrap());
        assert_eq!(avg.value(i), row["avg_rating"].as_f64().unwrap());
    }

    // Projected rows keep nested values as structs; a row without a field is null there.
    let b = arrow(
        &shards,
        r#"{"prefix": "DE/1", "fields": ["views", "rating", "meta"], "limit": 5}"#,
    );
    assert_eq!(names(&b), ["key", "views", "rating", "meta"]);
    assert!(matches!(
        b.schema().field(3).data_type(),
        DataType::Struct(_)
    ));
    assert_eq!(b.num_rows(), 5);
    // DE/1, DE/10, DE/11, DE/12, DE/13: the odd ids have no rating.
    assert_eq!(b.column(2).null_count(), 3);
    assert!(
        Query::parse(br#"{"aggregates": {"n": {"count": "*"}, "n": {"count": "*"}}}"#)
            .unwrap_err()
            .to_string()
            .contains("aggregate \"n\" is given twice")
    );

    // No rows: the columns are still there, typed Null.
    let b = arrow(
        &shards,
        r#"{"prefix": "XX/", "group_by": ["genre"], "aggregates": {"n": {"count": "*"}}}"#,
    );
    assert_eq!(b.num_rows(), 0);
    assert_eq!(names(&b), ["genre", "n"]);
}

#[test]
fn arrow_writes_values_without_a_common_type_as_json_text() {
    use arrow_array::cast::AsArray;
    let mut answer = run(
        &catalogue(),
        &Query::parse(br#"{"keys": ["DE/1", "DE/2"]}"#)
            .unwrap()
            .plan(catalogue().shards()[0].metadata())
            .unwrap(),
        &Limits::default(),
    )
    .unwrap();
    answer.rows[0].insert("value".into(), json!({"a": 1}));
    answer.rows[1].insert("value".into(), json!(7));
    let ipc = answer.to_arrow_ipc(None).unwrap();
    let mut reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None).unwrap();
    let b = reader.next().unwrap().unwrap();
    let value = b.column(1).as_string::<i32>();
    assert_eq!(value.value(0), r#"{"a":1}"#);
    assert_eq!(value.value(1), "7");
}

#[test]
fn projections_copy_members_and_walk_paths() {
    let shards = catalogue();
    let meta = shards.shards()[0].metadata();
    let p = snapkv_query::Projection::new(meta, "views, meta.year,country,genre,title_id,views")
        .unwrap();
    let value =
        br#"{"genre": "drama", "views": 1.50e2, "meta": {"year": 2004, "x": [1]}, "z": "\u00e9"}"#;
    let out = p.apply(b"SE/7", value);
    // By name, each once; members as stored; paths parsed; key columns from the key.
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"country":"SE","genre":"drama","meta.year":2004,"title_id":7,"views":1.50e2}"#
    );
    let out: Value = serde_json::from_slice(&p.apply(b"SE/7", br#"{"genre": null}"#)).unwrap();
    assert_eq!(
        out,
        json!({"country": "SE", "genre": null, "meta.year": null, "title_id": 7, "views": null})
    );
    // A value that is not an object (or not JSON) has no members.
    for bad in [&b"[1, 2]"[..], b"7", b"{\"views\": 1", b"{\"views\": 1} x"] {
        let out: Value = serde_json::from_slice(&p.apply(b"DE/1", bad)).unwrap();
        assert_eq!(
            out["views"],
            Value::Null,
            "{}",
            String::from_utf8_lossy(bad)
        );
        assert_eq!(out["title_id"], 1);
    }
    // The last of a member given twice, as a JSON parser reads it.
    let p = snapkv_query::Projection::new(meta, "views").unwrap();
    assert_eq!(
        &p.apply(b"DE/1", br#"{"views": 1, "views": 2}"#)[..],
        br#"{"views":2}"#
    );
}

/// 20,000 rows over 400 countries: enough blocks for a grouped range query to be read by
/// several threads.
fn many() -> Shards {
    let mut meta = Metadata::default();
    meta.value_encoding = ValueEncoding::Json;
    meta.key_columns = vec!["country".into(), "id".into()];
    let mut rows = Vec::new();
    for i in 0..20_000u64 {
        let country = format!("C{:03}", i % 400);
        let genre = ["drama", "comedy", "horror"][(i % 3) as usize];
        let v = json!({"views": (i * 7919) % 1000, "rating": (i % 13) as f64 / 4.0,
                       "genre": genre});
        rows.push((format!("{country}/{i:05}"), v.to_string()));
    }
    rows.sort();
    let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
    for (k, v) in &rows {
        w.insert(k.as_bytes(), v.as_bytes()).unwrap();
    }
    Shards::single(Snapshot::open(w.finish().unwrap().0).unwrap())
}

#[test]
fn threads_answer_as_one_thread_does() {
    let shards = many();
    assert!(
        shards.shards()[0].block_count() >= 4 * snapkv_query::MIN_BLOCKS_PER_THREAD,
        "too few blocks to split: {}",
        shards.shards()[0].block_count()
    );
    // The cuts the threads read between: first keys of blocks, inside the range, increasing.
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let cuts = shards
        .split_range(Included(b"C010"), Excluded(b"C390"), 4, 16)
        .unwrap();
    assert!((2..=3).contains(&cuts.len()), "{cuts:?}");
    assert!(cuts.windows(2).all(|w| w[0] < w[1]));
    assert!(cuts
        .iter()
        .all(|c| &c[..] > b"C010".as_slice() && &c[..] < b"C390".as_slice()));
    let all = shards.split_range(Unbounded, Unbounded, 1000, 1).unwrap();
    assert_eq!(all.len() as u64, shards.shards()[0].block_count() - 1);
    assert!(shards
        .split_range(Included(b"C010"), Excluded(b"C011"), 4, 16)
        .unwrap()
        .is_empty());
    let q = json!({"start": "C010", "end": "C390", "filter": {"views": {">": 100}},
        "group_by": ["genre"],
        "aggregates": {"n": {"count": "*"}, "views": {"sum": "views"}, "lo": {"min": "views"},
                       "hi": {"max": "rating"}, "avg": {"avg": "rating"},
                       "countries": {"count_distinct": "country"},
                       "p90": {"percentile": {"field": "views", "p": 90}},
                       "top": {"top_k": {"by": "views", "k": 5}}}});
    let plan = Query::parse(q.to_string().as_bytes())
        .unwrap()
        .plan(shards.shards()[0].metadata())
        .unwrap();
    let mut one = Limits::default();
    one.threads = 1;
    let mut four = Limits::default();
    four.threads = 4;
    let a = run(&shards, &plan, &one).unwrap();
    let b = run(&shards, &plan, &four).unwrap();
    assert_eq!(a.stats.rows_scanned, b.stats.rows_scanned);
    assert_eq!(a.stats.rows_matched, b.stats.rows_matched);
    assert_eq!(a.rows.len(), 3);
    for (x, y) in a.rows.iter().zip(&b.rows) {
        let avg = |r: &serde_json::Map<String, Value>| r["avg"].as_f64().unwrap();
        assert!((avg(x) - avg(y)).abs() < 1e-9, "{x:?} {y:?}");
        let mut x = x.clone();
        let mut y = y.clone();
        x.remove("avg");
        y.remove("avg");
        assert_eq!(x, y);
    }
    // The limits hold across threads.
    let mut tight = four.clone();
    tight.max_rows_scanned = 5_000;
    match run(&shards, &plan, &tight) {
        Err(QueryError::OverBudget { limit, .. }) => assert_eq!(limit, "max_rows_scanned"),
        other => panic!("expected max_rows_scanned, got {other:?}"),
    }
    let mut few_groups = four.clone();
    few_groups.max_groups = 2;
    match run(&shards, &plan, &few_groups) {
        Err(QueryError::OverBudget { limit, .. }) => assert_eq!(limit, "max_groups"),
        other => panic!("expected max_groups, got {other:?}"),
    }
}
