//! CLI commands about what mail is made of: templates, business documents and attachments.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// The templates, built-in and saved.
    List,
    /// One template: its sources and the data it expects.
    Show { id: String },
    /// Render a template with data from a JSON file (`-` for standard input), or with its sample data.
    Preview {
        id: String,
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DocumentCommand {
    /// Send a business document: the request of POST /v1/documents/send as a JSON file (`-` for
    /// standard input).
    Send {
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum AttachmentCommand {
    /// Upload a file; prints the attachment id to use in messages.
    Upload {
        file: PathBuf,
        /// The media type; default from the file name (pdf, xml, png, jpg, txt, csv, html), else
        /// application/octet-stream.
        #[arg(long)]
        content_type: Option<String>,
    },
}

/// Reads JSON from a file, or from standard input for `-`.
fn read_json(path: &PathBuf) -> Result<Value> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn media_type_of(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("xml") => "application/xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("eml") => "message/rfc822",
        _ => "application/octet-stream",
    }
}

pub async fn templates(client: &Client, command: TemplateCommand, output: Output) -> Result<()> {
    match command {
        TemplateCommand::List => {
            let value = client.call(Method::GET, "/v1/templates", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &["id", "version", "document_type", "scenario", "built_in"],
                )
            });
        }
        TemplateCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/templates/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        TemplateCommand::Preview { id, data } => {
            let body = match data {
                Some(path) => json!({"data": read_json(&path)?}),
                None => json!({}),
            };
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/templates/{id}/preview"),
                    Some(body),
                    &[],
                )
                .await?;
            emit(output, &value, |v| {
                println!("Subject: {}", v["subject"].as_str().unwrap_or_default());
                println!();
                println!("{}", v["text"].as_str().unwrap_or_default());
            });
        }
    }
    Ok(())
}

pub async fn documents(client: &Client, command: DocumentCommand, output: Output) -> Result<()> {
    let DocumentCommand::Send { file } = command;
    let request = read_json(&file)?;
    let value = client
        .call(Method::POST, "/v1/documents/send", Some(request), &[])
        .await?;
    emit(output, &value, print_record);
    Ok(())
}

pub async fn attachments(
    client: &Client,
    command: AttachmentCommand,
    output: Output,
) -> Result<()> {
    let AttachmentCommand::Upload { file, content_type } = command;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the file has no name")?
        .replace(['"', '\\', '\r', '\n'], "_");
    let bytes = tokio::fs::read(&file)
        .await
        .with_context(|| format!("reading {}", file.display()))?;
    let content_type = content_type.unwrap_or_else(|| media_type_of(&file).to_owned());
    let value = client
        .upload(
            "/v1/attachments",
            bytes,
            &content_type,
            &format!("attachment; filename=\"{name}\""),
        )
        .await?;
    emit(output, &value, print_record);
    Ok(())
}
