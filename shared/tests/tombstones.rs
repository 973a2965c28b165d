//! Erasure and rotation in every order (docs/contracts.md, Erasure and rotation): a property
//! over generated histories that contain, besides completions, bookings and consent changes,
//! a chain of two rotations (A0 → A1 → A2), a rotation whose new ref is then erased
//! (X → Y, erase Y), an erasure (E) and a bystander (B); every patient's events may come
//! before or after the rotations and erasures that concern them (late retries), dated in the
//! past or up to 23 hours ahead. The history is delivered through the receiver service
//! (signed bodies, as a PMS sends them) in a random order, with random duplicates, in random
//! batches (so an erasure and a rotation may share a batch), then the nightly scan runs.
//!
//! 1. Any two deliveries leave the same records, tombstones and actions.
//! 2. Afterwards no stored record, action or tombstone names A0, A1, X, Y, E or one of E's
//!    (or Y's) appointments; A2 and B are there.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};
use shared::action::Action;
use shared::ids::{OpaqueRef, PracticeId};
use shared::ports::{Clock, PracticeRepo};
use shared::service::admin::{self, NewPractice};
use shared::service::receiver::{self, Delivery};
use shared::service::scan;
use shared::signature::{SignedHeaders, WebhookSecret};
use shared::state::Entity;
use shared::testing::World;
use shared::tombstone::Fate;

const PRACTICE: &str = "tomb-clinic";
const NOW: &str = "2026-11-21T08:30:00Z";

// Refs that pass the guard and share no substring a check could confuse.
const A0: &str = "p_Ka7Wm2Qx9Rt4Lz8Vn3Bd";
const A1: &str = "p_Hc5Ty8Jw3Np6Xs1Gq4Mf";
const A2: &str = "p_Ud9Re2Zk7Fb4Wy6Cp3Lh";
const X: &str = "p_Ng4Vq7Dm1Sx8Tk5Jr2Wb";
const Y: &str = "p_Qe3Lt6Hy9Bz2Kw5Mc8Rn";
const E: &str = "p_Wd2Px5Gm8Cr3Vt6Yk9Zs";
const B: &str = "p_Fj6Nb1Ks4Qh7Ld9Tx2Ep";
/// Patients whose events the history carries (A0..A2 are one patient over time; X, Y one).
const PATIENTS: [&str; 7] = [A0, A1, A2, X, Y, E, B];
/// What must be gone afterwards.
const GONE: [&str; 5] = [A0, A1, X, Y, E];

fn now() -> Timestamp {
    NOW.parse().unwrap()
}
fn pid() -> PracticeId {
    PracticeId::parse(PRACTICE).unwrap()
}
fn hours_before_now(h: i64) -> Timestamp {
    now() - SignedDuration::from_hours(h)
}

/// An `occurred_at`: mostly in the past, sometimes up to 23 hours ahead.
fn occurred() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        6 => (0i64..=300 * 24).prop_map(hours_before_now),
        1 => (1i64..=23).prop_map(|h| hours_before_now(-h)),
    ]
}

fn appt_ref(patient: usize, n: usize) -> String {
    // Distinct per patient and appointment, derived from the patient's ref tail.
    format!("appt_{}{n}", &PATIENTS[patient][2..14])
}

fn event(ty: &str, at: Timestamp, data: Value) -> Value {
    json!({"type": ty, "occurred_at": at.to_string(), "data": data})
}

/// One patient's own events: a completion or two, one or two appointments (booked, maybe
/// rescheduled, maybe cancelled or a no-show), a consent change or two.
fn patient_events(patient: usize) -> impl Strategy<Value = Vec<Value>> {
    let treatments = prop::sample::select(vec![
        "neurotoxin",
        "dermal_filler",
        "chemical_peel",
        "facial",
    ]);
    (
        prop::collection::vec((treatments.clone(), occurred()), 1..=2),
        prop::collection::vec(
            (
                treatments,
                occurred(),
                (-30i64 * 24..=60 * 24),
                prop::option::of((occurred(), 0u8..3)),
            ),
            1..=2,
        ),
        prop::collection::vec((any::<bool>(), occurred()), 0..=2),
    )
        .prop_map(move |(completions, appts, consents)| {
            let p = PATIENTS[patient];
            let mut out = Vec::new();
            for (i, (t, at)) in completions.into_iter().enumerate() {
                out.push(event(
                    "appointment.completed",
                    at,
                    json!({"appointment_ref": format!("{}v{i}", appt_ref(patient, 9)),
                        "patient_ref": p, "treatment": t}),
                ));
            }
            for (n, (t, at, start_h, then)) in appts.into_iter().enumerate() {
                let a = appt_ref(patient, n);
                let starts_at = hours_before_now(-start_h);
                out.push(event(
                    "appointment.booked",
                    at,
                    json!({"appointment_ref": a, "patient_ref": p, "treatment": t,
                        "provider_ref": "prov_Dr4Xk9Qm2Lp7", "starts_at": starts_at.to_string(),
                        "duration_min": 30}),
                ));
                if let Some((at2, what)) = then {
                    out.push(match what {
                        0 => event(
                            "appointment.rescheduled",
                            at2,
                            json!({"appointment_ref": a,
                                "starts_at": (starts_at + SignedDuration::from_hours(24)).to_string(),
                                "duration_min": 45}),
                        ),
                        1 => event(
                            "appointment.cancelled",
                            at2,
                            json!({"appointment_ref": a, "reopens_slot": false}),
                        ),
                        _ => event("appointment.no_show", at2, json!({"appointment_ref": a})),
                    });
                }
            }
            for (out_, at) in consents {
                out.push(event(
                    if out_ {
                        "patient.opted_out"
                    } else {
                        "patient.opted_in"
                    },
                    at,
                    json!({"patient_ref": p}),
                ));
            }
            out
        })
}

/// The rotations and erasures.
fn privacy_events() -> impl Strategy<Value = Vec<Value>> {
    prop::collection::vec(occurred(), 4).prop_map(|at| {
        vec![
            event(
                "patient.ref_rotated",
                at[0],
                json!({"old_ref": A0, "new_ref": A1}),
            ),
            event(
                "patient.ref_rotated",
                at[1],
                json!({"old_ref": A1, "new_ref": A2}),
            ),
            event(
                "patient.ref_rotated",
                at[2],
                json!({"old_ref": X, "new_ref": Y}),
            ),
            event("patient.erased", at[3], json!({"patient_ref": Y})),
            event("patient.erased", at[3], json!({"patient_ref": E})),
        ]
    })
}

#[derive(Debug, Clone)]
struct Plan {
    order: Vec<usize>,
    batch_sizes: Vec<usize>,
}

impl Plan {
    fn batches(&self) -> Vec<&[usize]> {
        let mut out = Vec::new();
        let mut rest = &self.order[..];
        for size in &self.batch_sizes {
            if rest.is_empty() {
                break;
            }
            let (b, r) = rest.split_at((*size).min(rest.len()));
            out.push(b);
            rest = r;
        }
        if !rest.is_empty() {
            out.push(rest);
        }
        out
    }
}

fn plan(n: usize) -> impl Strategy<Value = Plan> {
    prop::collection::vec(0..n, 0..=n / 2)
        .prop_flat_map(move |dups| {
            let order: Vec<usize> = (0..n).chain(dups).collect();
            let m = order.len();
            (
                Just(order).prop_shuffle(),
                prop::collection::vec(1usize..=6, m),
            )
        })
        .prop_map(|(order, batch_sizes)| Plan { order, batch_sizes })
}

#[derive(Debug, Clone)]
struct Case {
    events: Vec<Value>,
    one: Plan,
    two: Plan,
}

fn case() -> impl Strategy<Value = Case> {
    let mut parts: Vec<BoxedStrategy<Vec<Value>>> = (0..PATIENTS.len())
        .map(|p| patient_events(p).boxed())
        .collect();
    parts.push(privacy_events().boxed());
    parts
        .prop_map(|parts| parts.into_iter().flatten().collect::<Vec<Value>>())
        .prop_flat_map(|events| {
            let n = events.len();
            (Just(events), plan(n), plan(n))
        })
        .prop_map(|(events, one, two)| Case { events, one, two })
}

fn onboarded() -> (World, WebhookSecret) {
    let world = World::new(now());
    let done = futures::executor::block_on(admin::create_practice(
        &world.store,
        world.keys(),
        NewPractice {
            id: pid(),
            time_zone: "America/New_York".into(),
            owner_emails: vec!["owner@clinic.example".into()],
            trigger_url: "https://pms.example.com/triggers".parse().unwrap(),
        },
    ))
    .unwrap();
    (world, WebhookSecret::parse(&done.webhook_secret).unwrap())
}

async fn post(world: &World, secret: &WebhookSecret, n: usize, body: &Value) {
    let body = serde_json::to_vec(body).unwrap();
    let id = format!("msg_{n}");
    let ts = world.clock.now().as_second();
    let sig = secret.sign(&id, ts, &body).unwrap();
    let ts = ts.to_string();
    let res = receiver::receive(
        &world.receiver(),
        Delivery {
            practice_id: Some(PRACTICE),
            content_type: Some("application/json"),
            headers: SignedHeaders {
                id: Some(&id),
                timestamp: Some(&ts),
                signature: Some(&sig),
            },
            body: &body,
        },
    )
    .await;
    if let Err(e) = res {
        panic!("delivery {n} refused: {e:?}");
    }
}

/// What a run leaves: records (without versions, which count writes), tombstones (without
/// their time, which is the receipt of whichever delivery applied them) and actions.
#[derive(Debug, PartialEq)]
struct Outcome {
    entities: Vec<(String, Entity)>,
    tombstones: Vec<(String, Fate)>,
    actions: Vec<Action>,
}

fn run(case: &Case, plan: &Plan) -> (World, Outcome) {
    let (world, secret) = onboarded();
    futures::executor::block_on(async {
        for (n, batch) in plan.batches().into_iter().enumerate() {
            let body = match batch {
                [one] => case.events[*one].clone(),
                _ => {
                    json!({"events": batch.iter().map(|j| case.events[*j].clone()).collect::<Vec<_>>()})
                }
            };
            post(&world, &secret, n, &body).await;
        }
        scan::scan_practice(&world.scan(), &pid(), "2026-11-21".parse().unwrap())
            .await
            .unwrap();
    });
    let out = Outcome {
        entities: world
            .store
            .entities(&pid())
            .into_iter()
            .map(|r| (r.sort_key, r.entity))
            .collect(),
        tombstones: {
            // Each run's practice has its own tombstone key: name the ids by what they hash.
            let key = futures::executor::block_on(async {
                let p = world.store.get_practice(&pid()).await.unwrap().unwrap();
                world
                    .secrets
                    .tombstone(&p.id, &p.secrets)
                    .await
                    .unwrap()
                    .unwrap()
            });
            let mut names = std::collections::BTreeMap::new();
            for (i, r) in PATIENTS.iter().enumerate() {
                let r = OpaqueRef::parse(r).unwrap();
                names.insert(key.patient(&r), r.as_str().to_owned());
                for n in 0..2 {
                    let a = OpaqueRef::parse(&appt_ref(i, n)).unwrap();
                    names.insert(key.appointment(&a), a.as_str().to_owned());
                }
            }
            let mut named: Vec<(String, Fate)> = world
                .store
                .tombstones(&pid())
                .into_iter()
                .map(|t| {
                    let name = names
                        .get(&t.id)
                        .cloned()
                        .unwrap_or_else(|| format!("unknown {}", t.id));
                    (name, t.fate)
                })
                .collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            named
        },
        actions: world.store.actions(&pid()),
    };
    (world, out)
}

/// Everything stored for the practice, as text (tombstones by their stored form: fate and
/// target; their ids are keyed hashes).
fn dump(o: &Outcome) -> String {
    // Serialized as stored (`Debug` redacts refs, so it would hide what this looks for).
    let fates: Vec<&Fate> = o.tombstones.iter().map(|(_, f)| f).collect();
    serde_json::to_string(&(&o.entities, &o.actions, fates)).unwrap()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/tombstones.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn erasure_and_rotation_end_the_same_in_every_order(case in case()) {
        let (_, one) = run(&case, &case.one);
        let (_, two) = run(&case, &case.two);
        prop_assert_eq!(&one.entities, &two.entities, "stored records differ");
        prop_assert_eq!(&one.tombstones, &two.tombstones, "tombstones differ");
        prop_assert_eq!(&one.actions, &two.actions, "actions differ");

        let text = dump(&one);
        for gone in GONE {
            prop_assert!(!text.contains(gone), "{} survives:\n{}", gone, text);
        }
        for erased in [E, Y] {
            let p = PATIENTS.iter().position(|p| *p == erased).unwrap();
            for n in 0..2 {
                let a = appt_ref(p, n);
                prop_assert!(!text.contains(&a), "an erased patient's appointment {} survives", a);
            }
        }
        // The live refs are still there: the chain ends at A2, and B was never touched.
        let refs: BTreeSet<&str> = [A2, B].into_iter().filter(|r| text.contains(r)).collect();
        prop_assert_eq!(refs.len(), 2, "A2 and B hold their records");
        // Every tombstone: the two erasures, the three rotated-away refs (A0 and A1 point to
        // A2; X, rotated to an erased ref, is erased) and the erased appointments.
        let erased = one.tombstones.iter().filter(|(_, f)| *f == Fate::Erased).count();
        let to_a2 = one
            .tombstones
            .iter()
            .filter(|(_, f)| matches!(f, Fate::RotatedTo { to } if to.as_str() == A2))
            .count();
        prop_assert_eq!(to_a2, 2, "A0 and A1 lead to A2");
        prop_assert!(erased >= 3, "E, Y and X are erased: {:?}", one.tombstones);
        prop_assert_eq!(one.tombstones.len(), to_a2 + erased);
    }
}
