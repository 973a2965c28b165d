//! The HTTP side: authorization, rate limiting, routing and each endpoint.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{self, ApiError};
use crate::{Group, Inner, RecordedRequest, Shared, ids};

/// ListBookings' page size when `limit` is not given, and the most it returns: Square's
/// reference gives neither (README.md).
pub(crate) const BOOKINGS_PAGE: usize = 100;
/// ListCustomerGroups' default and maximum `limit` (Square's reference: 1 to 50, default 50).
pub(crate) const GROUPS_PAGE: usize = 50;
/// ListBookings' longest range: `start_at_max` defaults to 31 days after `start_at_min`.
const MAX_RANGE: SignedDuration = SignedDuration::from_hours(31 * 24);

pub(crate) async fn handle(
    State(st): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let square_version = headers
        .get("square-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let params = Query::<Vec<(String, String)>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut inner = st.lock();
    let answer = answer(
        &st,
        &mut inner,
        &method,
        uri.path(),
        &params,
        &headers,
        &body,
    );
    let (status, json, retry_after) = match answer {
        Ok(v) => (200, v, None),
        Err((e, retry_after)) => (e.status, e.body(), retry_after),
    };
    inner.requests.push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        status,
        square_version,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    drop(inner);
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json),
    )
        .into_response();
    if let Some(v) = retry_after.and_then(|secs| HeaderValue::from_str(&secs.to_string()).ok()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

type Answer = Result<Value, (ApiError, Option<u64>)>;

fn answer(
    st: &Shared,
    inner: &mut Inner,
    method: &Method,
    path: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Answer {
    authorize(st, headers).map_err(|e| (e, None))?;
    if inner.rate_limited > 0 {
        inner.rate_limited -= 1;
        return Err((
            ApiError::new(
                429,
                "RATE_LIMIT_ERROR",
                "RATE_LIMITED",
                "Rate limit exceeded. Please try again later.",
            ),
            inner.retry_after,
        ));
    }
    route(st, inner, method, path, params, headers, body).map_err(|e| (e, None))
}

/// `Authorization: Bearer <token>` (the scheme case-insensitive, as HTTP's are).
fn authorize(st: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized =
        |detail: &str| ApiError::new(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED", detail);
    let Some(value) = headers.get("authorization") else {
        return Err(unauthorized("This request could not be authorized."));
    };
    let value = value.to_str().unwrap_or_default();
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(unauthorized(
            "The `Authorization` http header of your request was malformed. The header value is \
             expected to be of the format \"Bearer TOKEN\" (without quotation marks), where TOKEN \
             is to be replaced with your access token (e.g. \"Bearer ABC123def456GHI789jkl0\").",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim() != st.access_token {
        return Err(unauthorized("This request could not be authorized."));
    }
    Ok(())
}

fn route(
    st: &Shared,
    inner: &mut Inner,
    method: &Method,
    path: &str,
    params: &[(String, String)],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, ApiError> {
    if let Some(v) = headers.get("square-version") {
        let v = v.to_str().unwrap_or_default();
        if !is_version(v) {
            return Err(ApiError::invalid(
                "INVALID_SQUARE_VERSION_FORMAT",
                "Square-Version",
                format!("Invalid Square-Version format: {v:?}. Expected YYYY-MM-DD."),
            ));
        }
    }
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let allowed: &[Method] = match segs.as_slice() {
        ["v2", "bookings"] => match *method {
            Method::GET => return list_bookings(st, inner, params),
            _ => &[Method::GET],
        },
        ["v2", "bookings", id] => match *method {
            Method::GET => return retrieve_booking(inner, id),
            _ => &[Method::GET],
        },
        ["v2", "customers", "groups"] => match *method {
            Method::GET => return list_groups(st, inner, params),
            Method::POST => return create_group(inner, body),
            _ => &[Method::GET, Method::POST],
        },
        ["v2", "customers", id] => match *method {
            Method::GET => return retrieve_customer(inner, id),
            _ => &[Method::GET],
        },
        ["v2", "customers", cid, "groups", gid] => match *method {
            Method::PUT => return membership(inner, cid, gid, true),
            Method::DELETE => return membership(inner, cid, gid, false),
            _ => &[Method::PUT, Method::DELETE],
        },
        _ => {
            return Err(ApiError::not_found(format!(
                "The simulator has no endpoint {path} (only those the Square relay uses)."
            )));
        }
    };
    let allowed: Vec<String> = allowed.iter().map(ToString::to_string).collect();
    Err(ApiError::new(
        405,
        "INVALID_REQUEST_ERROR",
        "METHOD_NOT_ALLOWED",
        format!(
            "{method} is not allowed on {path}; allowed: {}.",
            allowed.join(", ")
        ),
    ))
}

fn is_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `limit`: an integer from 1; above `max` is read as `max` (`too_high` = false) or refused.
fn limit(
    params: &[(String, String)],
    default: usize,
    max: usize,
    too_high: bool,
) -> Result<usize, ApiError> {
    let Some(raw) = param(params, "limit") else {
        return Ok(default);
    };
    let n: i64 = raw.trim().parse().map_err(|_| {
        ApiError::invalid(
            "EXPECTED_INTEGER",
            "limit",
            format!("Expected an integer value, got {raw:?}."),
        )
    })?;
    if n < 1 {
        return Err(ApiError::invalid(
            "VALUE_TOO_LOW",
            "limit",
            format!("`limit` must be at least 1, got {n}."),
        ));
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if n > max && too_high {
        return Err(ApiError::invalid(
            "VALUE_TOO_HIGH",
            "limit",
            format!("`limit` must be at most {max}, got {n}."),
        ));
    }
    Ok(n.min(max))
}

fn time(params: &[(String, String)], name: &'static str) -> Result<Option<Timestamp>, ApiError> {
    param(params, name)
        .map(|raw| {
            raw.parse::<Timestamp>().map_err(|_| {
                ApiError::invalid(
                    "INVALID_TIME",
                    name,
                    format!("Invalid RFC 3339 timestamp for `{name}`: {raw:?}."),
                )
            })
        })
        .transpose()
}

/// Where a ListBookings page ended, with the request it belongs to.
#[derive(Serialize, Deserialize)]
struct BookingsCursor {
    /// The filters of the original request (every parameter but `cursor` and `limit`).
    request: Vec<(String, String)>,
    /// The range it resolved to (its `start_at_min` may have defaulted to "now").
    min: Timestamp,
    max: Timestamp,
    /// The last booking returned: (start_at, id).
    after: (Timestamp, String),
}

fn list_bookings(
    st: &Shared,
    inner: &Inner,
    params: &[(String, String)],
) -> Result<Value, ApiError> {
    let limit = limit(params, BOOKINGS_PAGE, BOOKINGS_PAGE, false)?;
    let mut request: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "cursor" && k != "limit")
        .cloned()
        .collect();
    request.sort();
    let (min, max, after) = match param(params, "cursor") {
        Some(c) => {
            let cursor: BookingsCursor = st.cursors.read(c).ok_or_else(|| {
                ApiError::invalid(
                    "INVALID_CURSOR",
                    "cursor",
                    "The pagination cursor is invalid.",
                )
            })?;
            // Square: send the cursor "along with the same original request".
            if cursor.request != request {
                return Err(ApiError::invalid(
                    "INVALID_CURSOR",
                    "cursor",
                    "The cursor belongs to a request with other parameters.",
                ));
            }
            (cursor.min, cursor.max, Some(cursor.after))
        }
        None => {
            let min = time(params, "start_at_min")?.unwrap_or_else(|| inner.now());
            let max = time(params, "start_at_max")?.unwrap_or(min + MAX_RANGE);
            if max < min {
                return Err(ApiError::invalid(
                    "INVALID_TIME_RANGE",
                    "start_at_max",
                    "`start_at_max` must not be before `start_at_min`.",
                ));
            }
            if max.duration_since(min) > MAX_RANGE {
                return Err(ApiError::invalid(
                    "INVALID_VALUE",
                    "start_at_max",
                    "The range between `start_at_min` and `start_at_max` must not exceed 31 days.",
                ));
            }
            (min, max, None)
        }
    };
    let location = param(params, "location_id");
    let customer = param(params, "customer_id");
    let team_member = param(params, "team_member_id");
    let mut hits: Vec<(Timestamp, &String, &Value)> = inner
        .bookings
        .iter()
        .filter_map(|(id, b)| {
            let start: Timestamp = b.get("start_at")?.as_str()?.parse().ok()?;
            Some((start, id, b))
        })
        .filter(|(start, _, _)| (min..=max).contains(start))
        .filter(|(_, _, b)| {
            location.is_none_or(|l| b.get("location_id").and_then(Value::as_str) == Some(l))
        })
        .filter(|(_, _, b)| {
            customer.is_none_or(|c| b.get("customer_id").and_then(Value::as_str) == Some(c))
        })
        .filter(|(_, _, b)| {
            team_member.is_none_or(|t| {
                b.get("appointment_segments")
                    .and_then(Value::as_array)
                    .is_some_and(|segs| {
                        segs.iter()
                            .any(|s| s.get("team_member_id").and_then(Value::as_str) == Some(t))
                    })
            })
        })
        .filter(|(start, id, _)| after.as_ref().is_none_or(|(s, i)| (start, *id) > (s, i)))
        .collect();
    hits.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let more = hits.len() > limit;
    hits.truncate(limit);
    let mut out = json!({
        "bookings": hits.iter().map(|(_, _, b)| (*b).clone()).collect::<Vec<_>>(),
        "errors": [],
    });
    if let Some((start, id, _)) = hits.last().filter(|_| more) {
        out["cursor"] = json!(st.cursors.issue(&BookingsCursor {
            request,
            min,
            max,
            after: (*start, (*id).clone()),
        }));
    }
    Ok(out)
}

fn retrieve_booking(inner: &Inner, id: &str) -> Result<Value, ApiError> {
    inner
        .bookings
        .get(id)
        .map(|b| json!({ "booking": b, "errors": [] }))
        .ok_or_else(|| ApiError::not_found(format!("Booking `{id}` not found.")))
}

fn retrieve_customer(inner: &Inner, id: &str) -> Result<Value, ApiError> {
    inner
        .customers
        .get(id)
        .map(|c| json!({ "customer": model::customer(c) }))
        .ok_or_else(|| ApiError::not_found(format!("Customer with ID `{id}` not found.")))
}

#[derive(Serialize, Deserialize)]
struct GroupsCursor {
    offset: usize,
}

fn list_groups(st: &Shared, inner: &Inner, params: &[(String, String)]) -> Result<Value, ApiError> {
    let limit = limit(params, GROUPS_PAGE, GROUPS_PAGE, true)?;
    let offset = match param(params, "cursor") {
        Some(c) => {
            st.cursors
                .read::<GroupsCursor>(c)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "INVALID_CURSOR",
                        "cursor",
                        "The pagination cursor is invalid.",
                    )
                })?
                .offset
        }
        None => 0,
    };
    let page: Vec<Value> = inner
        .groups
        .iter()
        .skip(offset)
        .take(limit)
        .map(model::group)
        .collect();
    // Square leaves out what is empty: no groups, an empty object.
    let mut out = json!({});
    if !page.is_empty() {
        out["groups"] = json!(page);
    }
    let next = offset + page.len();
    if next < inner.groups.len() {
        out["cursor"] = json!(st.cursors.issue(&GroupsCursor { offset: next }));
    }
    Ok(out)
}

#[derive(Deserialize)]
struct CreateGroup {
    idempotency_key: Option<String>,
    group: Option<NewGroup>,
}

#[derive(Deserialize)]
struct NewGroup {
    name: Option<String>,
}

fn create_group(inner: &mut Inner, body: &[u8]) -> Result<Value, ApiError> {
    let req: CreateGroup = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            "INVALID_REQUEST_ERROR",
            "EXPECTED_JSON_BODY",
            format!("The request body is not a CreateCustomerGroupRequest: {e}."),
        )
    })?;
    let Some(group) = req.group else {
        return Err(ApiError::invalid(
            "MISSING_REQUIRED_PARAMETER",
            "group",
            "Field must be set",
        ));
    };
    let name = group.name.unwrap_or_default();
    if name.trim().is_empty() {
        return Err(ApiError::invalid(
            "MISSING_REQUIRED_PARAMETER",
            "group.name",
            "Field must be set",
        ));
    }
    let key = req.idempotency_key.filter(|k| !k.is_empty());
    if let Some((id, asked)) = key.as_ref().and_then(|k| inner.group_keys.get(k)) {
        if *asked != name {
            return Err(ApiError::invalid(
                "IDEMPOTENCY_KEY_REUSED",
                "idempotency_key",
                "The idempotency key was already used with another request.",
            ));
        }
        if let Some(g) = inner.groups.iter().find(|g| &g.id == id) {
            return Ok(json!({ "group": model::group(g) }));
        }
    }
    let now = inner.now();
    let g = Group {
        id: ids::customer_group(),
        name: name.clone(),
        created_at: now,
        updated_at: now,
    };
    let out = json!({ "group": model::group(&g) });
    if let Some(k) = key {
        inner.group_keys.insert(k, (g.id.clone(), name));
    }
    inner.groups.push(g);
    Ok(out)
}

fn membership(inner: &mut Inner, cid: &str, gid: &str, add: bool) -> Result<Value, ApiError> {
    if !inner.groups.iter().any(|g| g.id == gid) {
        return Err(ApiError::not_found(format!(
            "Customer group `{gid}` not found."
        )));
    }
    let now = inner.now();
    let Some(c) = inner.customers.get_mut(cid) else {
        return Err(ApiError::not_found(format!(
            "Customer with ID `{cid}` not found."
        )));
    };
    let member = c.group_ids.iter().any(|g| g == gid);
    if add && !member {
        c.group_ids.push(gid.to_owned());
    } else if !add && member {
        c.group_ids.retain(|g| g != gid);
    } else {
        return Ok(json!({}));
    }
    c.version += 1;
    c.updated_at = now;
    Ok(json!({}))
}
