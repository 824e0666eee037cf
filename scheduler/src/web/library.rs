//! The library browser: `/library` (entities) → `/library/{entity}` (collections) →
//! `/library/{entity}/{collection}` (containers) → `/library/{entity}/{collection}/{container}`
//! (its tags: arch, size, sha256, date, and the `singularity pull` command to copy).
//!
//! It reads what the library API serves, under the same access rule (`crate::library`):
//! strangers see public collections and containers, a signed-in user also their own private
//! ones (admins all), and anything else answers 404, as if it did not exist. Every name and
//! description came from a user: all of it goes through [`escape`], and path segments through
//! [`segment`].

use std::fmt::Write;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::page::{Nav, bytes, escape, not_found, pull_command, render, time, url_encode};
use super::session::session_of;
use crate::api::{ApiError, AppState};
use crate::library::{Located, locate, owns};
use crate::store::{ImageRow, TagRow};

/// Most entities listed on `/library`.
const MAX_ENTITIES: i64 = 500;

/// A name as one URL path segment.
fn segment(name: &str) -> String {
    url_encode(name).replace('/', "%2F")
}

/// The breadcrumb trail: the library, then each of `names` linking to its own page (the last
/// is the current page).
fn crumbs(names: &[&str]) -> String {
    let mut out = String::from(
        "<nav aria-label=\"Breadcrumb\" class=\"crumbs\"><ol><li><a href=\"/library\">Library</a></li>",
    );
    let mut href = String::from("/library");
    for (i, name) in names.iter().enumerate() {
        href.push('/');
        href.push_str(&segment(name));
        let current = if i + 1 == names.len() {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(
            out,
            "<li><a href=\"{href}\"{current}>{}</a></li>",
            escape(name)
        );
    }
    out.push_str("</ol></nav>");
    out
}

/// A table `id` with `columns`, whose `<tbody>` the caller appends; close it with
/// [`TABLE_END`].
fn table_start(id: &str, columns: &[&str]) -> String {
    let mut out = format!("<div class=\"table-wrap\"><table id=\"{id}\"><thead><tr>");
    for column in columns {
        let _ = write!(out, "<th scope=\"col\">{column}</th>");
    }
    out.push_str("</tr></thead>");
    out
}

/// Closes [`table_start`].
const TABLE_END: &str = "</table></div>";

fn private_badge(private: bool) -> &'static str {
    if private {
        " <span class=\"badge\">private</span>"
    } else {
        ""
    }
}

fn description(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("<p class=\"description\">{}</p>", escape(text))
    }
}

/// `GET /library`: the entities with something the viewer may see.
pub async fn index(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = session_of(&headers, &state).await?;
    let viewer = session.as_ref().map(|s| &s.user);
    let entities = state.store.visible_entities(viewer, MAX_ENTITIES).await?;
    let mut main = String::from(
        "<p class=\"help\">Images pushed with <code>singularity push</code> or built here, by \
         entity, collection and container.</p>",
    );
    if entities.is_empty() {
        main.push_str("<p id=\"library-empty\">The library has nothing you may see yet.</p>");
    } else {
        main.push_str(&table_start(
            "entities",
            &["Entity", "Collections", "Description", "Created"],
        ));
        main.push_str("<tbody>");
        for entity in &entities {
            let _ = write!(
                main,
                "<tr><th scope=\"row\"><a href=\"/library/{href}\">{name}</a></th><td>{count}</td>\
                 <td>{description}</td><td>{created}</td></tr>",
                href = segment(&entity.name),
                name = escape(&entity.name),
                count = entity.visible_collections,
                description = escape(&entity.description),
                created = time(entity.created_ms),
            );
        }
        main.push_str("</tbody>");
        main.push_str(TABLE_END);
    }
    Ok(render("Library", Nav::Library, session.as_ref(), &main))
}

/// `GET /library/{entity}`: its collections the viewer may see.
pub async fn entity(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let session = session_of(&headers, &state).await?;
    let viewer = session.as_ref().map(|s| &s.user);
    let Some(entity) = state.store.entity_by_name(&name).await? else {
        return Ok(not_found(session.as_ref(), Nav::Library, "entity"));
    };
    let is_owner = owns(viewer, &entity);
    let collections: Vec<_> = state
        .store
        .collections_of(&entity.id)
        .await?
        .into_iter()
        .filter(|c| !c.private || is_owner)
        .collect();
    let mut main = crumbs(&[&entity.name]);
    main.push_str(&description(&entity.description));
    if collections.is_empty() {
        main.push_str("<p id=\"library-empty\">No collections you may see.</p>");
    } else {
        main.push_str(&table_start(
            "collections",
            &["Collection", "Description", "Created"],
        ));
        main.push_str("<tbody>");
        for collection in &collections {
            let _ = write!(
                main,
                "<tr><th scope=\"row\"><a href=\"/library/{entity}/{href}\">{name}</a>{badge}</th>\
                 <td>{description}</td><td>{created}</td></tr>",
                entity = segment(&entity.name),
                href = segment(&collection.name),
                name = escape(&collection.name),
                badge = private_badge(collection.private),
                description = escape(&collection.description),
                created = time(collection.created_ms),
            );
        }
        main.push_str("</tbody>");
        main.push_str(TABLE_END);
    }
    Ok(render(&entity.name, Nav::Library, session.as_ref(), &main))
}

/// `GET /library/{entity}/{collection}`: its containers the viewer may see.
pub async fn collection(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((entity_name, collection_name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = session_of(&headers, &state).await?;
    let viewer = session.as_ref().map(|s| &s.user);
    let Some(entity) = state.store.entity_by_name(&entity_name).await? else {
        return Ok(not_found(session.as_ref(), Nav::Library, "collection"));
    };
    let is_owner = owns(viewer, &entity);
    let Some(collection) = state
        .store
        .collection_by_name(&entity.id, &collection_name)
        .await?
        .filter(|c| !c.private || is_owner)
    else {
        return Ok(not_found(session.as_ref(), Nav::Library, "collection"));
    };
    let containers: Vec<_> = state
        .store
        .containers_of(&collection.id)
        .await?
        .into_iter()
        .filter(|c| !c.private || is_owner)
        .collect();
    let mut main = crumbs(&[&entity.name, &collection.name]);
    main.push_str(&description(&collection.description));
    if containers.is_empty() {
        main.push_str("<p id=\"library-empty\">No containers you may see.</p>");
    } else {
        main.push_str(&table_start(
            "containers",
            &["Container", "Description", "Downloads", "Created"],
        ));
        main.push_str("<tbody>");
        for container in &containers {
            let _ = write!(
                main,
                "<tr><th scope=\"row\"><a href=\"/library/{entity}/{collection}/{href}\">{name}</a>{badge}</th>\
                 <td>{description}</td><td>{downloads}</td><td>{created}</td></tr>",
                entity = segment(&entity.name),
                collection = segment(&collection.name),
                href = segment(&container.name),
                name = escape(&container.name),
                badge = private_badge(container.private),
                description = escape(&container.description),
                downloads = container.download_count,
                created = time(container.created_ms),
            );
        }
        main.push_str("</tbody>");
        main.push_str(TABLE_END);
    }
    let title = format!("{}/{}", entity.name, collection.name);
    Ok(render(&title, Nav::Library, session.as_ref(), &main))
}

/// One row of a container's page: a tag (or, for an untagged image, its hash) and its image.
struct Row<'a> {
    /// What follows the `:` of the ref.
    reference: String,
    /// The arch of the tag, else of the image (`""`: unknown).
    arch: &'a str,
    image: &'a ImageRow,
}

/// The rows of a container: each arch tag; each arch-less tag unless an arch tag of the same
/// name points at the same image (push sets both); each uploaded image no tag points at.
fn rows<'a>(images: &'a [ImageRow], tags: &'a [TagRow]) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for tag in tags {
        let Some(image) = images.iter().find(|i| i.id == tag.image_id && i.uploaded) else {
            continue;
        };
        if tag.arch.is_empty()
            && tags
                .iter()
                .any(|t| !t.arch.is_empty() && t.tag == tag.tag && t.image_id == tag.image_id)
        {
            continue;
        }
        let arch = if tag.arch.is_empty() {
            image.arch.as_str()
        } else {
            tag.arch.as_str()
        };
        rows.push(Row {
            reference: tag.tag.clone(),
            arch,
            image,
        });
    }
    rows.sort_by(|a, b| (&a.reference, a.arch).cmp(&(&b.reference, b.arch)));
    for image in images.iter().rev() {
        if image.uploaded && !tags.iter().any(|t| t.image_id == image.id) {
            rows.push(Row {
                reference: image.hash.clone(),
                arch: &image.arch,
                image,
            });
        }
    }
    rows
}

/// `GET /library/{entity}/{collection}/{container}`: its tags with their images and pull
/// commands.
pub async fn container(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((entity, collection, container)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let session = session_of(&headers, &state).await?;
    let viewer = session.as_ref().map(|s| &s.user);
    let Some(located) = locate(&state.store, &entity, &collection, &container)
        .await?
        .filter(|l| l.is_readable(viewer))
    else {
        return Ok(not_found(session.as_ref(), Nav::Library, "container"));
    };
    let images = state.store.images_of(&located.container.id).await?;
    let tags = state.store.tags_of(&located.container.id).await?;
    let main = container_page(&state, &located, &rows(&images, &tags));
    let title = format!(
        "{}/{}/{}",
        located.entity.name, located.collection.name, located.container.name
    );
    Ok(render(&title, Nav::Library, session.as_ref(), &main))
}

fn container_page(state: &AppState, located: &Located, rows: &[Row<'_>]) -> String {
    let path = format!(
        "{}/{}/{}",
        located.entity.name, located.collection.name, located.container.name
    );
    let mut main = crumbs(&[
        &located.entity.name,
        &located.collection.name,
        &located.container.name,
    ]);
    main.push_str(&description(&located.container.description));
    let _ = write!(
        main,
        "<dl class=\"facts\"><div><dt>Visibility</dt><dd>{visibility}</dd></div>\
         <div><dt>Downloads</dt><dd>{downloads}</dd></div>\
         <div><dt>Created</dt><dd>{created}</dd></div></dl>",
        visibility = if located.collection.private || located.container.private {
            "private"
        } else {
            "public"
        },
        downloads = located.container.download_count,
        created = time(located.container.created_ms),
    );
    if rows.is_empty() {
        main.push_str("<p id=\"library-empty\">No images yet.</p>");
        return main;
    }
    main.push_str(&table_start(
        "tags",
        &["Tag", "Arch", "Size", "SHA-256", "Created"],
    ));
    for (i, row) in rows.iter().enumerate() {
        let command = pull_command(row.arch, &format!("{path}:{}", row.reference));
        let size = u64::try_from(row.image.size).unwrap_or(0);
        let _ = write!(
            main,
            // One body per tag: its facts, then its pull command across the table.
            "<tbody data-tag=\"{tag}\"><tr><th scope=\"row\" class=\"mono\">{tag}</th><td>{arch}</td>\
             <td title=\"{size} bytes\">{size_label}</td><td class=\"mono wrap sha\">{sha}</td>\
             <td>{created}</td></tr><tr class=\"pull-row\"><td colspan=\"5\"><div class=\"copy-row\">\
             <label for=\"pull-{i}\" class=\"visually-hidden\">Pull command for {tag} {arch}</label>\
             <input id=\"pull-{i}\" class=\"mono pull-command\" readonly value=\"{command}\">\
             <button type=\"button\" data-copy=\"pull-{i}\">Copy</button></div></td></tr></tbody>",
            tag = escape(&row.reference),
            arch = if row.arch.is_empty() {
                "–".to_owned()
            } else {
                escape(row.arch)
            },
            size_label = bytes(size),
            sha = escape(row.image.hash.trim_start_matches("sha256.")),
            created = time(row.image.created_ms),
            command = escape(&command),
        );
    }
    let _ = write!(
        main,
        "{TABLE_END}<p class=\"help\">The commands pull from your current remote \
         (<code>singularity remote use</code>); with another remote, add \
         <code>--library {}</code>.</p>",
        escape(&state.public_url)
    );
    main
}
