//! Helpers shared by the simulator's tests: an authorized client and a webhook receiver.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use jiff::Timestamp;
use serde_json::Value;
use square_sim::{NewBooking, Segment, SquareSim};

pub const TOKEN: &str = "EAAAl-sim-access-token";

pub fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// GET or another method on the simulator, authorized; (status, headers, JSON body).
pub async fn call(
    sim: &SquareSim,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path_and_query}", sim.url))
        .bearer_auth(TOKEN)
        .header("Square-Version", "2025-08-20");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let json = resp.json::<Value>().await.unwrap();
    (status, headers, json)
}

pub async fn get(sim: &SquareSim, path_and_query: &str) -> (u16, Value) {
    let (s, _, v) = call(sim, reqwest::Method::GET, path_and_query, None).await;
    (s, v)
}

/// A seller with a location, a team member, a service and a customer.
pub struct Seller {
    pub location: String,
    pub team_member: String,
    pub service: String,
    pub customer: String,
}

pub fn seller(sim: &SquareSim) -> Seller {
    Seller {
        location: sim.add_location(),
        team_member: sim.add_team_member(),
        service: sim.add_service_variation("Hygiene visit"),
        customer: sim.add_customer(square_sim::Person {
            given_name: Some("Amelia".into()),
            family_name: Some("Earhart".into()),
            email_address: Some("amelia.earhart@example.com".into()),
            phone_number: Some("+1-212-555-4240".into()),
            birthday: Some("1997-07-24".into()),
            note: Some("allergic to latex".into()),
        }),
    }
}

impl Seller {
    pub fn booking(&self, start_at: Timestamp) -> NewBooking {
        NewBooking {
            customer_id: self.customer.clone(),
            location_id: self.location.clone(),
            start_at,
            segments: vec![Segment {
                service_variation_id: self.service.clone(),
                team_member_id: self.team_member.clone(),
                duration_minutes: 60,
            }],
            status: "ACCEPTED".into(),
            customer_note: Some("I would like to sit near the window please".into()),
            seller_note: Some("".into()),
        }
    }
}

/// One notification as the receiver got it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct ReceiverState {
    got: Mutex<Vec<Delivery>>,
    answer: Mutex<u16>,
}

/// A local endpoint that takes Square's notifications and answers with a set status.
pub struct Receiver {
    pub url: String,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start(path: &str) -> Self {
        let state = Arc::new(ReceiverState {
            got: Mutex::new(Vec::new()),
            answer: Mutex::new(200),
        });
        let app = axum::Router::new()
            .route(path, post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state }
    }

    pub fn answer(&self, status: u16) {
        *self.state.answer.lock().unwrap() = status;
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.got.lock().unwrap().clone()
    }
}

async fn receive(
    State(st): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    st.got.lock().unwrap().push(Delivery { headers, body });
    StatusCode::from_u16(*st.answer.lock().unwrap()).unwrap()
}
