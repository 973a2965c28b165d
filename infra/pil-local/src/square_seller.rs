//! A practice on Square, in the simulator: the seller (a location, a provider, three services,
//! customers whose profiles and bookings carry PHI), then the practice's side (onboarded in
//! the layer with its relay as the trigger endpoint, the relay started, Square subscribed).
//! `make run`'s Square part and the relay's tests build it the same way.

use std::ops::Deref;

use anyhow::Result;
use jiff::Timestamp;
use serde_json::json;
use shared::refkey::RefKey;
use square_sim::{NewBooking, Person, Segment, SquareSim};

use crate::relay::{RelaySettings, RelayStack};
use crate::stack::{Onboarded, Stack, workspace_root};

/// The seller's Square before any relay: history can be made in it first.
pub struct Seller {
    pub square: SquareSim,
    pub token: String,
    pub location: String,
    pub provider: String,
    /// Mapped to `neurotoxin`.
    pub botox: String,
    /// Mapped to `dermal_filler`.
    pub filler: String,
    /// Left unmapped: the relay skips its bookings.
    pub consult: String,
}

impl Seller {
    /// The simulator, answering to `token`, with the location, provider and services.
    pub async fn start(token: &str) -> Result<Self> {
        let square = SquareSim::start(0, token).await?;
        Ok(Self {
            location: square.add_location(),
            provider: square.add_team_member(),
            botox: square.add_service_variation("Botox - forehead"),
            filler: square.add_service_variation("Lip filler"),
            consult: square.add_service_variation("Consultation"),
            token: token.to_owned(),
            square,
        })
    }

    /// A customer whose profile carries PHI (name, e-mail, phone, birthday, a note).
    pub fn customer(&self, given: &str, family: &str) -> String {
        self.square.add_customer(Person {
            given_name: Some(given.into()),
            family_name: Some(family.into()),
            email_address: Some(format!(
                "{}.{}@example.com",
                given.to_lowercase(),
                family.to_lowercase()
            )),
            phone_number: Some("+15555550100".into()),
            birthday: Some("1984-03-02".into()),
            note: Some("prefers afternoons".into()),
        })
    }

    /// A booking of `service` for `customer`, 30 minutes with the provider, with notes that
    /// carry PHI.
    pub fn booking(
        &self,
        customer: &str,
        start: Timestamp,
        service: &str,
        status: &str,
    ) -> NewBooking {
        NewBooking {
            customer_id: customer.to_owned(),
            location_id: self.location.clone(),
            start_at: start,
            segments: vec![Segment {
                service_variation_id: service.to_owned(),
                team_member_id: self.provider.clone(),
                duration_minutes: 30,
            }],
            status: status.to_owned(),
            customer_note: Some("Allergic to lidocaine; call 555-0100 first".into()),
            seller_note: Some("DOB 1984-03-02, prefers Dr. Lee".into()),
        }
    }

    /// The practice's side: `practice_id` onboarded in the layer with the relay as its
    /// trigger endpoint; the relay started with the seller's token, a new ref key and the
    /// service map (Botox → neurotoxin, Lip filler → dermal_filler); Square subscribed to
    /// send its booking webhooks to the relay, signed with `signature_key`.
    pub async fn connect(
        self,
        stack: &Stack,
        practice_id: &str,
        signature_key: &str,
    ) -> Result<SquareSetup> {
        let bound = RelayStack::bind().await?;
        let trigger_url = format!("{}{}", bound.1, square_relay::http::TRIGGER_PATH);
        let practice = stack
            .onboard_with_trigger_url(practice_id, &trigger_url)
            .await?;
        let relay = RelayStack::start(
            bound,
            &workspace_root(),
            &stack.clients,
            &practice,
            &RelaySettings {
                layer_api_url: stack.api_url.clone(),
                square_api_url: self.square.url.clone(),
                square_access_token: self.token.clone(),
                square_signature_key: signature_key.into(),
                service_map: self.service_map(),
                ref_key: RefKey::generate(),
            },
        )
        .await?;
        self.square
            .subscribe(&relay.notification_url(), signature_key);
        Ok(SquareSetup {
            seller: self,
            relay,
            practice,
        })
    }

    /// `{"<Botox's variation id>": "neurotoxin", "<Lip filler's>": "dermal_filler"}`.
    pub fn service_map(&self) -> String {
        json!({ self.botox.clone(): "neurotoxin", self.filler.clone(): "dermal_filler" })
            .to_string()
    }

    pub async fn stop(self) {
        self.square.stop().await;
    }
}

/// A seller connected through its relay to an onboarded practice.
pub struct SquareSetup {
    pub seller: Seller,
    pub relay: RelayStack,
    pub practice: Onboarded,
}

impl Deref for SquareSetup {
    type Target = Seller;

    fn deref(&self) -> &Seller {
        &self.seller
    }
}

impl SquareSetup {
    /// An `ACCEPTED` booking made now, as Square answers it; an error unless the relay took
    /// its `booking.created` (200).
    pub async fn book(
        &self,
        customer: &str,
        start: Timestamp,
        service: &str,
    ) -> Result<serde_json::Value> {
        let (b, status) = self
            .square
            .create_booking(
                self.booking(customer, start, service, "ACCEPTED"),
                Timestamp::now(),
            )
            .await;
        anyhow::ensure!(
            status == Some(200),
            "the relay answered booking.created with {status:?}"
        );
        Ok(b)
    }

    pub async fn stop(self) {
        self.relay.stop().await;
        self.seller.stop().await;
    }
}
