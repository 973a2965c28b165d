//! The closed treatment vocabulary (docs/contracts.md, Event types) and its rule defaults
//! (docs/design.md §4.1).

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Treatment {
    Neurotoxin,
    DermalFiller,
    Biostimulator,
    LaserResurfacing,
    LaserHairRemoval,
    IplPhotofacial,
    ChemicalPeel,
    Microneedling,
    Facial,
    BodyContouring,
    HormoneTherapy,
    IvTherapy,
    Consultation,
    Other,
}

impl Treatment {
    pub const ALL: [Treatment; 14] = [
        Self::Neurotoxin,
        Self::DermalFiller,
        Self::Biostimulator,
        Self::LaserResurfacing,
        Self::LaserHairRemoval,
        Self::IplPhotofacial,
        Self::ChemicalPeel,
        Self::Microneedling,
        Self::Facial,
        Self::BodyContouring,
        Self::HormoneTherapy,
        Self::IvTherapy,
        Self::Consultation,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Neurotoxin => "neurotoxin",
            Self::DermalFiller => "dermal_filler",
            Self::Biostimulator => "biostimulator",
            Self::LaserResurfacing => "laser_resurfacing",
            Self::LaserHairRemoval => "laser_hair_removal",
            Self::IplPhotofacial => "ipl_photofacial",
            Self::ChemicalPeel => "chemical_peel",
            Self::Microneedling => "microneedling",
            Self::Facial => "facial",
            Self::BodyContouring => "body_contouring",
            Self::HormoneTherapy => "hormone_therapy",
            Self::IvTherapy => "iv_therapy",
            Self::Consultation => "consultation",
            Self::Other => "other",
        }
    }

    /// Parses the wire name; `None` for anything outside the closed vocabulary.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Plain-words label for owner-facing text.
    pub fn label(self) -> &'static str {
        match self {
            Self::Neurotoxin => "Neurotoxin",
            Self::DermalFiller => "Dermal filler",
            Self::Biostimulator => "Biostimulator",
            Self::LaserResurfacing => "Laser resurfacing",
            Self::LaserHairRemoval => "Laser hair removal",
            Self::IplPhotofacial => "IPL photofacial",
            Self::ChemicalPeel => "Chemical peel",
            Self::Microneedling => "Microneedling",
            Self::Facial => "Facial",
            Self::BodyContouring => "Body contouring",
            Self::HormoneTherapy => "Hormone therapy",
            Self::IvTherapy => "IV therapy",
            Self::Consultation => "Consultation",
            Self::Other => "Other",
        }
    }

    /// Default rebook cycle in days (docs/design.md §4.1); `None` where no rebook rule
    /// applies by default.
    pub fn default_cycle_days(self) -> Option<u32> {
        match self {
            Self::Neurotoxin => Some(90),
            Self::DermalFiller => Some(180),
            Self::Biostimulator => Some(365),
            Self::HormoneTherapy => Some(105),
            Self::ChemicalPeel => Some(28),
            Self::Microneedling | Self::IplPhotofacial | Self::Facial => Some(35),
            Self::LaserHairRemoval => Some(42),
            Self::LaserResurfacing => Some(35),
            Self::BodyContouring | Self::IvTherapy | Self::Consultation | Self::Other => None,
        }
    }

    /// Default average ticket in whole currency units, used for value estimates until the
    /// practice sets its own.
    pub fn default_avg_ticket(self) -> u32 {
        match self {
            Self::Neurotoxin => 450,
            Self::DermalFiller => 750,
            Self::Biostimulator => 900,
            Self::LaserResurfacing => 1200,
            Self::LaserHairRemoval => 300,
            Self::IplPhotofacial => 400,
            Self::ChemicalPeel => 200,
            Self::Microneedling => 350,
            Self::Facial => 150,
            Self::BodyContouring => 800,
            Self::HormoneTherapy => 300,
            Self::IvTherapy => 200,
            Self::Consultation => 100,
            Self::Other => 150,
        }
    }
}

impl fmt::Display for Treatment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_round_trips_and_is_closed() {
        for t in Treatment::ALL {
            assert_eq!(Treatment::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
        assert_eq!(Treatment::parse("Botox"), None);
        assert_eq!(Treatment::parse("Neurotoxin"), None);
        assert_eq!(
            Treatment::default_cycle_days(Treatment::Neurotoxin),
            Some(90)
        );
    }
}
