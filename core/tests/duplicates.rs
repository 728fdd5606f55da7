//! Duplicate candidates on registration, offline, against the device's records.
mod common;

use common::*;
use gridwork_core::*;

fn reasons(s: &Store, new: &NewRecord) -> Vec<(String, Vec<DuplicateReason>)> {
    s.duplicate_candidates(new)
        .unwrap()
        .into_iter()
        .map(|c| (c.record.id, c.reasons))
        .collect()
}

#[test]
fn the_same_person_place_or_organisation_is_caught_before_it_is_registered_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), "wang", Role::Worker, "g1");
    let home = s
        .create(
            NewRecord::new(Kind::Place, "g1")
                .field("name", "3栋201室")
                .field("address", "幸福路12号3栋201室"),
        )
        .unwrap();
    let fang = s
        .create(
            NewRecord::new(Kind::Person, "g1")
                .field("name", "王芳")
                .field("birth_date", "1950-03-02")
                .field("id_number", "11010519500302002X")
                .field("home_place", home.clone()),
        )
        .unwrap();
    let person = |name: &str| NewRecord::new(Kind::Person, "g1").field("name", name);

    // The same ID number, typed another way: whatever the name.
    assert_eq!(
        reasons(
            &s,
            &person("Someone Else").field("id_number", "110105 19500302 002x")
        ),
        [(fang.clone(), vec![DuplicateReason::SameIdNumber])]
    );
    // The same name and birth date: as written, or by pinyin (a homophone, or in Latin letters).
    for name in ["王芳", "汪芳", "Wang Fang"] {
        assert_eq!(
            reasons(&s, &person(name).field("birth_date", "1950-03-02")),
            [(fang.clone(), vec![DuplicateReason::SameNameAndBirthDate])],
            "{name}"
        );
    }
    // The same name at the same home.
    assert_eq!(
        reasons(&s, &person("王芳").field("home_place", home.clone())),
        [(fang.clone(), vec![DuplicateReason::SameNameAndHome])]
    );
    // Everything at once.
    let all = reasons(
        &s,
        &person("王芳")
            .field("birth_date", "1950-03-02")
            .field("home_place", home.clone())
            .field("id_number", "11010519500302002X"),
    );
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.len(), 3);
    // Not the same: another name, another date, nothing to compare, another kind.
    assert!(reasons(&s, &person("王方圆").field("birth_date", "1950-03-02")).is_empty());
    assert!(reasons(&s, &person("王芳").field("birth_date", "1951-03-02")).is_empty());
    assert!(reasons(&s, &person("王芳")).is_empty());
    assert!(reasons(
        &s,
        &NewRecord::new(Kind::Event, "g1").field("title", "王芳")
    )
    .is_empty());
    // The candidate's ID number is masked as lists show it.
    let c = s
        .duplicate_candidates(&person("x").field("id_number", "11010519500302002X"))
        .unwrap();
    assert_eq!(c[0].record.fields["id_number"], "****002X");
    // A deleted record is no candidate.
    s.delete(&fang, None).unwrap();
    assert!(reasons(&s, &person("王芳").field("birth_date", "1950-03-02")).is_empty());

    // Places: the same name at the same address (spacing aside); organisations: name and phone.
    assert_eq!(
        reasons(
            &s,
            &NewRecord::new(Kind::Place, "g1")
                .field("name", "3栋201室")
                .field("address", "幸福路12号 3栋201室")
        ),
        [(home.clone(), vec![DuplicateReason::SameNameAndAddress])]
    );
    let org = s
        .create(
            NewRecord::new(Kind::Organisation, "g1")
                .field("name", "Residents' Committee")
                .field("contact_phone", "010 6552 9988"),
        )
        .unwrap();
    assert_eq!(
        reasons(
            &s,
            &NewRecord::new(Kind::Organisation, "g1")
                .field("name", "residents' committee")
                .field("contact_phone", "(010) 6552-9988")
        ),
        [(org, vec![DuplicateReason::SameNameAndPhone])]
    );
}
