//! `GET /models` and `GET /models/{id}`: the one model this server runs.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::AppState;

fn model_object(app: &AppState) -> Value {
    json!({"id": app.model_id, "object": "model", "created": app.created, "owned_by": "whale"})
}

pub async fn list(State(app): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model_object(&app)]}))
}

pub async fn one(State(app): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id == app.model_id {
        Ok(Json(model_object(&app)))
    } else {
        Err(ApiError::ModelNotFound(id))
    }
}
