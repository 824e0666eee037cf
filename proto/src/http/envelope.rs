//! The json-resp envelope every enveloped endpoint answers with (build-api.md §9,
//! sylabs/json-resp `json_response.go`).
//!
//! A client reads `error` first, even on a 2xx status, and fails a 2xx body without `data`, so
//! success always carries `data` and failure always carries `error` with the status code.

use serde::{Deserialize, Serialize};

/// `{"data"?: T, "page"?: Page, "error"?: Error}`, each member omitted when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response<T> {
    /// The payload of a successful response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// Paging of a list response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<Page>,
    /// Why the request failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// The `error` member: the HTTP status code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The HTTP status code, repeated.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
    /// What went wrong; the client prints it after `<code> <status text>: `.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The `page` member of list responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Token of the previous page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prev: String,
    /// Token of the next page.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub next: String,
    /// Items in all pages.
    #[serde(rename = "totalSize", default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<u64>,
}

fn is_zero(code: &u16) -> bool {
    *code == 0
}

impl<T> Response<T> {
    /// A success carrying `data`.
    pub fn data(data: T) -> Self {
        Self {
            data: Some(data),
            page: None,
            error: None,
        }
    }
}

impl Response<()> {
    /// A failure with the status `code` and `message`.
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        Self {
            data: None,
            page: None,
            error: Some(ErrorBody {
                code,
                message: message.into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_and_data_envelopes_as_json_resp_writes_them() {
        assert_eq!(
            serde_json::to_string(&Response::error(404, "build not found")).unwrap(),
            r#"{"error":{"code":404,"message":"build not found"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::data(serde_json::json!({"version": "1"}))).unwrap(),
            r#"{"data":{"version":"1"}}"#
        );
    }

    #[test]
    fn reads_pages_and_tolerates_empty_errors() {
        let page: Response<Vec<u8>> =
            serde_json::from_str(r#"{"data":[1],"page":{"next":"x","totalSize":3}}"#).unwrap();
        assert_eq!(page.page.unwrap().total_size, Some(3));
        let bare: Response<()> = serde_json::from_str(r#"{"error":{}}"#).unwrap();
        assert_eq!(bare.error.unwrap().code, 0);
    }
}
