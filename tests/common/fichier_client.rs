//! A small blocking 1fichier client for the emulator's own tests, written
//! from `shared/api/1fichier.md` (not from the emulator's code).

use std::time::Duration;

use reqwest::blocking::{multipart, Client, Response};
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

use super::Emulator;

pub struct FichierClient {
    pub api: String,
    pub key: String,
    pub http: Client,
}

/// A downloaded answer: status, headers, body.
pub struct Fetched {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

pub fn http_client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

impl FichierClient {
    /// A client for the emulator's first 1fichier account.
    pub fn new(emulator: &Emulator) -> FichierClient {
        FichierClient::with_key(emulator, &emulator.key())
    }

    pub fn with_key(emulator: &Emulator, key: &str) -> FichierClient {
        FichierClient {
            api: emulator.fichier_url(),
            key: key.to_string(),
            http: http_client(),
        }
    }

    /// POSTs `body` to `<api>/<endpoint>.cgi`; returns status and JSON.
    pub fn call(&self, endpoint: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/{endpoint}.cgi", self.api))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        decode(endpoint, response)
    }

    /// Like [`FichierClient::call`] but the call must succeed.
    pub fn ok(&self, endpoint: &str, body: Value) -> Value {
        let (status, value) = self.call(endpoint, body);
        assert_eq!(status, 200, "{endpoint}: {value}");
        assert_eq!(value["status"], "OK", "{endpoint}: {value}");
        value
    }

    pub fn mkdir(&self, parent: i64, name: &str) -> i64 {
        self.ok("folder/mkdir", json!({"name": name, "folder_id": parent}))["folder_id"]
            .as_i64()
            .unwrap()
    }

    /// Items of `file/ls` (empty when the member is absent).
    pub fn files(&self, folder_id: i64) -> Vec<Value> {
        let listing = self.ok("file/ls", json!({"folder_id": folder_id}));
        listing["items"].as_array().cloned().unwrap_or_default()
    }

    pub fn subfolders(&self, folder_id: i64) -> Vec<Value> {
        let listing = self.ok("folder/ls", json!({"folder_id": folder_id}));
        listing["sub_folders"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Step 1 of an upload (GET, as rclone does); returns (node host, id).
    pub fn ok_get_upload_server(&self) -> (String, String) {
        let server = self
            .http
            .get(format!("{}/upload/get_upload_server.cgi", self.api))
            .bearer_auth(&self.key)
            .header("Content-Type", "application/json")
            .send()
            .unwrap();
        let (status, server) = decode("get_upload_server", server);
        assert_eq!(status, 200, "get_upload_server: {server}");
        let host = server["url"].as_str().unwrap().to_string();
        let id = server["id"].as_str().unwrap().to_string();
        assert!(!host.contains('/'), "a bare host: {host}");
        assert!(id.len() <= 10 && id.bytes().all(|b| b.is_ascii_alphanumeric()));
        (host, id)
    }

    /// Steps 1 and 2 of an upload; returns (node host, upload id, upload.cgi response).
    pub fn upload_raw(&self, form: multipart::Form) -> (String, String, Response) {
        let (host, id) = self.ok_get_upload_server();
        let response = self
            .http
            .post(format!("http://{host}/upload.cgi?id={id}"))
            .bearer_auth(&self.key)
            .multipart(form)
            .send()
            .unwrap();
        (host, id, response)
    }

    /// Step 3: `end.pl` in JSON.
    pub fn end(&self, host: &str, id: &str) -> Value {
        let response = self
            .http
            .get(format!("http://{host}/end.pl?xid={id}"))
            .header("JSON", "1")
            .send()
            .unwrap();
        decode("end.pl", response).1
    }

    /// Uploads `data` as `name` into `folder_id`; returns the end.pl link.
    pub fn upload(&self, folder_id: i64, name: &str, data: &[u8]) -> Value {
        let form = multipart::Form::new()
            .text("did", folder_id.to_string())
            .part(
                "file[]",
                multipart::Part::bytes(data.to_vec())
                    .file_name(name.to_string())
                    .mime_str("application/octet-stream")
                    .unwrap(),
            );
        let (host, id, response) = self.upload_raw(form);
        assert_eq!(response.status().as_u16(), 302, "upload.cgi");
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.ends_with(&format!("end.pl?xid={id}")),
            "{location}"
        );
        let end = self.end(&host, &id);
        let links = end["links"].as_array().expect("links");
        assert_eq!(links.len(), 1, "{end}");
        links[0].clone()
    }

    /// A direct link for a file URL.
    pub fn token(&self, url: &str) -> String {
        self.ok("download/get_token", json!({"url": url, "single": 1}))["url"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// GET (or HEAD) `url` with an optional Range header.
pub fn fetch(method: &str, url: &str, range: Option<&str>) -> Fetched {
    let client = http_client();
    let mut request = client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(range) = range {
        request = request.header("Range", range);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().map(|b| b.to_vec()).unwrap_or_default();
    Fetched {
        status,
        headers,
        body,
    }
}

fn decode(what: &str, response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap_or_default();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{what}: answer is not JSON ({e}): {text:?}"));
    (status, value)
}

/// Whirlpool of `data`, lower-case hex (what the service reports).
pub fn whirlpool_hex(data: &[u8]) -> String {
    use whirlpool::{Digest, Whirlpool};
    hex::encode(Whirlpool::digest(data))
}
