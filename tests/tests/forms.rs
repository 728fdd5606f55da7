//! City forms end to end on a real relay process: a worker enters a free attribute, an operator adds a
//! form mid-way while the worker is offline, the worker's offline edit made before it knew the form
//! still lands, the form reaches the worker's and the supervisor's devices at sync, the old values are
//! kept and flagged, and from then on the device asks for what the form requires and refuses values
//! that break it, as the relay would.
use gridwork_core::*;
use gridwork_tests::*;
use serde_json::json;

fn states(store: &Store, id: &str) -> Vec<(String, ValueState, Option<String>)> {
    store
        .record_form(id)
        .unwrap()
        .into_iter()
        .map(|v| (v.key, v.state, v.value))
        .collect()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn a_form_added_mid_way_checks_new_values_and_flags_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start(&dir.path().join("relay"));
    relay.add_areas();
    let wang = Device::new(&relay, dir.path(), "wang", Role::Worker, "g1");
    let zhou = Device::new(&relay, dir.path(), "zhou", Role::Supervisor, "c1");
    wang.sync();
    zhou.sync();
    assert!(wang
        .store
        .form_fields(Kind::Person, "g1")
        .unwrap()
        .is_empty());

    // Before any form: attributes are free.
    let li = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "李华")
                .attr("income", "about 3000"),
        )
        .unwrap();
    wang.sync();

    // The city adds a form for people (the district's), and the community narrows `income` to a choice.
    relay.add_form(&json!({
        "id": "city-person", "area": "d1", "kind": "person",
        "fields": [
            {"key": "pension", "label_zh": "领取养老金", "label_en": "Receives a pension",
             "type": "yes_no", "required": true},
            {"key": "income", "label_zh": "月收入", "label_en": "Monthly income", "type": "number"},
            {"key": "carer_id", "label_zh": "照护人身份证号", "label_en": "Carer's ID number",
             "type": "id_number", "help_en": "18 characters"}
        ]
    }));
    relay.add_form(&json!({
        "id": "c1-income", "area": "c1", "kind": "person",
        "fields": [{"key": "income", "label_zh": "收入水平", "label_en": "Income level",
                    "type": "choice", "options": ["low", "middle", "high"]}]
    }));
    // Meanwhile wang, offline, still works by no form: the edit lands at the next sync.
    wang.store
        .update(&li, Update::new().attr("income", "about 4000"))
        .unwrap();
    let report = wang.sync();
    assert_eq!((report.pushed, report.rejected), (1, 0), "{report:?}");
    assert!(wang.store.quarantined().unwrap().is_empty());

    // The forms arrived: the fields of a person in g1, the community's `income` replacing the city's.
    let fields = wang.store.form_fields(Kind::Person, "g1").unwrap();
    let shape: Vec<(&str, FormType, bool)> = fields
        .iter()
        .map(|f| (f.key.as_str(), f.ty, f.required))
        .collect();
    assert_eq!(
        shape,
        [
            ("pension", FormType::YesNo, true),
            ("income", FormType::Choice, false),
            ("carer_id", FormType::IdNumber, false)
        ]
    );
    assert_eq!(fields[1].options, ["low", "middle", "high"]);
    assert_eq!(fields[0].label_zh, "领取养老金");
    assert!(wang
        .store
        .form_fields(Kind::Place, "g1")
        .unwrap()
        .is_empty());
    assert_eq!(wang.store.forms().unwrap().len(), 2);

    // The old value is kept, readable and flagged; the required field is flagged missing.
    let expected_before = vec![
        ("pension".to_owned(), ValueState::Missing, None),
        ("income".to_owned(), ValueState::Outdated, s("about 4000")),
        ("carer_id".to_owned(), ValueState::Valid, None),
    ];
    assert_eq!(states(&wang.store, &li), expected_before);
    zhou.sync();
    assert_eq!(
        states(&zhou.store, &li),
        expected_before,
        "the supervisor sees the same"
    );

    // From now on the device asks for what the form requires and refuses what breaks it.
    let err = wang
        .store
        .create(NewRecord::new(Kind::Person, "g1").field("name", "王芳"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidField { field, .. } if field == "attrs.pension"),
        "{err:?}"
    );
    let err = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王芳")
                .attr("pension", "perhaps"),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::Refused { reason: rules::Reason::InvalidValue, detail } if detail.contains("attrs.pension") && !detail.contains("perhaps")),
        "{err:?}"
    );
    let err = wang
        .store
        .update(&li, Update::new().attr("income", "about 5000"))
        .unwrap_err();
    assert!(matches!(err, Error::Refused { .. }), "{err:?}");
    let err = wang
        .store
        .update(&li, Update::new().attr("carer_id", "110105194912310021"))
        .unwrap_err();
    assert!(
        !err.to_string().contains("110105"),
        "errors never echo values: {err}"
    );
    // An unrelated edit leaves the old value as it is.
    wang.store
        .update(&li, Update::new().set("phone", "13800000000"))
        .unwrap();
    assert_eq!(states(&wang.store, &li)[1].2, s("about 4000"));
    // Corrected by the form.
    wang.store
        .update(
            &li,
            Update::new()
                .attr("income", "middle")
                .attr("pension", "yes")
                .attr("carer_id", "11010519491231002X"),
        )
        .unwrap();
    let wang_fang = wang
        .store
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王芳")
                .attr("pension", "no"),
        )
        .unwrap();
    let report = wang.sync();
    assert_eq!(report.rejected, 0, "{report:?}");
    zhou.sync();
    let all_valid = |id: &str| {
        states(&zhou.store, id)
            .iter()
            .all(|(_, st, _)| *st == ValueState::Valid)
    };
    assert!(all_valid(&li), "{:?}", states(&zhou.store, &li));
    assert!(all_valid(&wang_fang));

    // A form removed: its values stay, now attributes no form defines.
    relay.admin(&["form", "remove", "c1-income"]);
    relay.admin(&["form", "remove", "city-person"]);
    zhou.sync();
    assert!(zhou.store.forms().unwrap().is_empty());
    let after = states(&zhou.store, &li);
    assert!(after.iter().all(|(_, st, _)| *st == ValueState::NotInForm));
    assert!(after.contains(&("income".to_owned(), ValueState::NotInForm, s("middle"))));
}
