//! Just enough DNS (RFC 1035) for a real request/response exchange over UDP: a query for an
//! A record, a server-side answer, and a check of the answer on the client side.

use std::net::Ipv4Addr;

use anyhow::{bail, ensure};

/// The address every answer carries: TEST-NET-1 (RFC 5737), data only, never contacted.
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// QR (response), RD and RA set, RCODE 0.
const RESPONSE_FLAGS: u16 = 0x8180;
/// RD set.
const QUERY_FLAGS: u16 = 0x0100;

/// A standard query with id `id` for the A record of `name` ("db.example.test").
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_LEN + name.len() + 6);
    for field in [id, QUERY_FLAGS, 1, 0, 0, 0] {
        packet.extend_from_slice(&field.to_be_bytes());
    }
    for label in name.split('.').filter(|label| !label.is_empty()) {
        packet.push(label.len().min(63) as u8);
        packet.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    packet.push(0);
    packet.extend_from_slice(&TYPE_A.to_be_bytes());
    packet.extend_from_slice(&CLASS_IN.to_be_bytes());
    packet
}

/// The server's answer to a query: the question echoed, and one A record for [`ANSWER`].
/// `None` for anything that is not a query with one question.
pub fn answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < HEADER_LEN + 5 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    let question_end = HEADER_LEN + question_len(&query[HEADER_LEN..])?;

    let mut response = Vec::with_capacity(question_end + 16);
    response.extend_from_slice(&query[0..2]);
    for field in [RESPONSE_FLAGS, 1, 1, 0, 0] {
        response.extend_from_slice(&field.to_be_bytes());
    }
    response.extend_from_slice(&query[HEADER_LEN..question_end]);

    // The answer names the question by a pointer to offset 12.
    response.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
    response.extend_from_slice(&TYPE_A.to_be_bytes());
    response.extend_from_slice(&CLASS_IN.to_be_bytes());
    response.extend_from_slice(&60u32.to_be_bytes());
    response.extend_from_slice(&4u16.to_be_bytes());
    response.extend_from_slice(&ANSWER.octets());
    Some(response)
}

/// Checks that `response` answers the query with id `id`, and returns the address it gives.
pub fn read_answer(response: &[u8], id: u16) -> anyhow::Result<Ipv4Addr> {
    ensure!(
        response.len() >= HEADER_LEN,
        "DNS response of {} bytes is too short",
        response.len()
    );
    ensure!(
        response[0..2] == id.to_be_bytes(),
        "DNS response answers another query id"
    );
    ensure!(response[2] & 0x80 != 0, "DNS message is not a response");
    ensure!(
        response[6..8] == [0, 1],
        "DNS response does not hold one answer"
    );

    let question_end = HEADER_LEN
        + question_len(&response[HEADER_LEN..])
            .ok_or_else(|| anyhow::anyhow!("DNS response has a malformed question"))?;
    // Pointer (2), type (2), class (2), TTL (4), length (2), then the address.
    let address_at = question_end + 12;
    let Some(octets) = response.get(address_at..address_at + 4) else {
        bail!("DNS response is cut short in its answer");
    };
    Ok(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
}

/// The length of a question (name, type and class) at the start of `bytes`.
fn question_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let label = usize::from(*bytes.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        if label > 63 {
            return None;
        }
        at += label;
    }
    let end = at + 4;
    (end <= bytes.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_round_trips_through_the_client_check() {
        let query = query(0x4242, "db.example.test");

        let response = answer(&query).expect("a query is answered");

        assert_eq!(read_answer(&response, 0x4242).unwrap(), ANSWER);
        assert!(read_answer(&response, 0x4243).is_err());
    }

    #[test]
    fn responses_are_not_answered() {
        let response = answer(&query(1, "a.test")).unwrap();

        assert_eq!(answer(&response), None);
    }
}
