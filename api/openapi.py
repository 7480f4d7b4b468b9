"""The OpenAPI 3.1 document, generated from the same resource definitions the routes use."""

from __future__ import annotations

from typing import Any

from api.auth import allowed_by
from api.query import OPERATORS
from api.schema import ApiField, ModelSchema

_KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string", "format": "uuid"},
    "text": {"type": "string"},
    "longtext": {"type": "string"},
    "phone": {"type": "string", "description": "E.164"},
    "email": {"type": "string"},
    "slug": {"type": "string"},
    "enum": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date-time"},
    "json": {},
}

ERRORS = {
    "400": "Bad input: unknown field, wrong type, bad operator, limit above 100",
    "401": "No API key, or an invalid or expired one",
    "403": "The key lacks the permission; the message lists what would allow it",
    "404": "No such object in the key's project",
    "405": "This resource cannot be written through the API",
    "409": "A value that must be unique is already used",
    "423": "The number is locked after too many wrong codes; a Project Owner or Admin re-sending a code unlocks it",
    "429": "Rate limit of the API key exceeded",
    "502": "Twilio refused the request: the message is Twilio's",
    "503": "The database is busy with other writes (SQLite's write lock was held past busy_timeout): retry in a moment",
    "504": "Twilio did not answer in time",
}


def _value_schema(api_field: ApiField, *, for_input: bool = False) -> dict[str, Any]:
    schema = dict(_KIND_SCHEMAS[api_field.kind])
    if api_field.enum:
        schema["enum"] = list(api_field.enum)
    if api_field.max_length and for_input:
        schema["maxLength"] = api_field.max_length
    if api_field.description:
        schema["description"] = api_field.description
    if api_field.nullable and schema.get("type"):
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def _object_schema(schema: ModelSchema, schemas: dict[type, ModelSchema], *, with_relations: bool) -> dict:
    properties: dict[str, Any] = {}
    for name, api_field in schema.fields.items():
        properties[name] = _value_schema(api_field)
    if with_relations:
        for name, relation in schema.relations.items():
            target = schemas.get(relation.target)
            nested = _object_schema(target, schemas, with_relations=False) if target else {"type": "object"}
            nested = {**nested, "description": relation.description}
            if relation.many:
                properties[name] = {"type": "array", "items": nested, "description": relation.description}
            else:
                properties[name] = {"anyOf": [nested, {"type": "null"}], "description": relation.description}
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _input_schema(resource, *, creating: bool) -> dict:
    properties: dict[str, Any] = {}
    required = []
    for name, api_field in resource.schema.fields.items():
        if api_field.read_only or (api_field.create_only and not creating and name != "projectId"):
            continue
        if name == "projectId" and not creating:
            continue
        properties[name] = _value_schema(api_field, for_input=True)
        if creating and api_field.required:
            required.append(name)
    for name, api_field in resource.schema.write_only.items():
        properties[name] = _value_schema(api_field, for_input=True)
        if creating and api_field.required:
            required.append(name)
    for name, relation in resource.extra_writable.items():
        properties[name] = {"type": "array", "items": {"type": "string", "format": "uuid"},
                            "description": relation.description}
    data = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        data["required"] = required
    return {"type": "object", "properties": {"data": data}, "required": ["data"]}


def _select_schema(resource) -> dict:
    from api.resources import SCHEMAS

    properties: dict[str, Any] = {name: {"type": "boolean"} for name in resource.schema.fields}
    for name, relation in resource.schema.relations.items():
        target = SCHEMAS.get(relation.target)
        sub = ({"type": "object", "properties": {f: {"type": "boolean"} for f in target.fields},
                "additionalProperties": False} if target else {"type": "object"})
        properties[name] = {"anyOf": [{"type": ["boolean", "null"]}, sub]}
    return {"type": ["object", "null"], "properties": properties, "additionalProperties": False,
            "description": "Fields to return (_id always). Relations: true, or an object of their fields; "
                           "a relation needs the permission to read its target (a 403 otherwise)."}


def _query_schema(resource) -> dict:
    operator = {
        "type": "object",
        "properties": {"_type": {"type": "string", "enum": list(OPERATORS)}, "value": {},
                       "startValue": {}, "endValue": {}},
        "required": ["_type"],
    }
    properties = {}
    for name, api_field in resource.schema.fields.items():
        value = {k: v for k, v in _value_schema(api_field).items() if k != "description"}
        if api_field.textual:
            value["maxLength"] = api_field.query_max_length
        if isinstance(value.get("type"), str):
            value["type"] = [value["type"], "null"]  # null means IS NULL, on any field
            if "enum" in value:
                value["enum"] = [*value["enum"], None]
        properties[name] = {"anyOf": [value, {"type": "array", "items": value}, operator]}
    return {"type": ["object", "null"], "properties": properties, "additionalProperties": False,
            "description": "A plain value means equals, null IS NULL, a list any-of; or an operator object."}


def _sort_schema(resource) -> dict:
    direction = {"enum": [1, -1, "ASC", "DESC"]}
    return {"type": ["object", "null"],
            "properties": {name: direction for name, f in resource.schema.fields.items() if f.sortable},
            "additionalProperties": False}


def _responses(ok_schema: dict, codes: tuple[str, ...], media_type: str = "application/json") -> dict:
    responses = {"200": {"description": "OK", "content": {media_type: {"schema": ok_schema}}}}
    for code in codes:
        responses[code] = {"description": ERRORS[code],
                           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return responses


def _body(schema: dict, required: bool = False) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _action_operation(action) -> dict:
    """The operation of one of a resource's extra operations (api/actions.py)."""
    operation = {
        "tags": [action.resource.title], "summary": action.summary, "operationId": action.operation_id,
        "description": f"{action.description} Allowed for: "
                       f"{', '.join(allowed_by(action.verb, action.resource.title))}.",
        "responses": _responses(action.response, action.codes, action.media_type),
    }
    if action.parameters:
        operation["parameters"] = action.parameters
    if action.body is not None:
        operation["requestBody"] = _body(action.body, True)
    return operation


def build_openapi(resources, actions=(), extra: dict | None = None) -> dict:
    """``extra``: paths, schemas and security schemes of another API served beside (api/ccai.py)."""
    from api.resources import SCHEMAS

    components: dict[str, Any] = {
        "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
    }
    paths: dict[str, Any] = {}
    read_codes = ("400", "401", "403", "404", "429")
    write_codes = ("400", "401", "403", "404", "405", "409", "429")
    id_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                 "description": "ID of the object"}]
    paging = [
        {"name": "skip", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "maximum": 10**9},
         "description": "Number of objects to skip"},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 0, "maximum": 100},
         "description": "Number of objects to fetch. By default 10, at most 100"},
    ]
    for resource in resources:
        name = resource.title.replace(" ", "")
        components[name] = _object_schema(resource.schema, SCHEMAS, with_relations=True)
        ref = {"$ref": f"#/components/schemas/{name}"}
        tag = resource.title
        base = f"/api/{resource.path}"

        def permissions(verb: str) -> str:
            return "Allowed for: " + ", ".join(allowed_by(verb, resource.title)) + "."

        list_body = _body({"type": "object", "properties": {
            "select": _select_schema(resource), "query": _query_schema(resource), "sort": _sort_schema(resource)}})
        list_ok = {"type": "object", "required": ["count", "limit", "skip", "data"], "properties": {
            "count": {"type": "integer"}, "limit": {"type": "integer"}, "skip": {"type": "integer"},
            "data": {"type": "array", "items": ref}}}
        list_op = {"tags": [tag], "summary": f"List {resource.title}", "parameters": paging,
                   "description": f"{resource.description}. {permissions('read')}",
                   "requestBody": list_body, "responses": _responses(list_ok, read_codes)}
        paths[f"{base}/get-list"] = {"post": {**list_op, "operationId": f"list{name}"}}
        item_body = _body({"type": "object", "properties": {"select": _select_schema(resource)}})
        paths[f"{base}/{{id}}/get-item"] = {"post": {
            "tags": [tag], "summary": f"Get {resource.title} by ID", "operationId": f"get{name}",
            "description": permissions("read"), "parameters": id_param, "requestBody": item_body,
            "responses": _responses(ref, read_codes)}}
        count_body = _body({"type": "object", "properties": {"query": _query_schema(resource)}})
        paths[f"{base}/count"] = {"post": {
            "tags": [tag], "summary": f"Count {resource.title}", "operationId": f"count{name}",
            "description": permissions("read"), "requestBody": count_body,
            "responses": _responses({"type": "object", "required": ["count"],
                                     "properties": {"count": {"type": "integer"}}}, read_codes)}}
        if not resource.writable:
            continue
        # The saved object: every field (and the ids of many-to-many relations such as labels).
        created = {"allOf": [ref], "required": [*resource.schema.fields, *resource.extra_writable]}
        empty = {"type": "object", "additionalProperties": False}
        paths[base] = {"post": {
            "tags": [tag], "summary": f"Create {resource.title}", "operationId": f"create{name}",
            "description": permissions("create"), "requestBody": _body(_input_schema(resource, creating=True), True),
            "responses": _responses(created, write_codes)}}
        update_op = {"tags": [tag], "summary": f"Update {resource.title} by ID", "parameters": id_param,
                     "description": permissions("update"),
                     "requestBody": _body(_input_schema(resource, creating=False), True),
                     "responses": _responses(empty, write_codes)}
        delete_op = {"tags": [tag], "summary": f"Delete {resource.title} by ID", "parameters": id_param,
                     "description": permissions("delete"), "responses": _responses(empty, write_codes)}
        paths[f"{base}/{{id}}"] = {"put": {**update_op, "operationId": f"update{name}"},
                                   "delete": {**delete_op, "operationId": f"delete{name}"}}
        paths[f"{base}/{{id}}/update-item"] = {"post": {**update_op, "operationId": f"updateItem{name}"}}
        paths[f"{base}/{{id}}/delete-item"] = {"post": {**delete_op, "operationId": f"deleteItem{name}"}}
    for action in actions:
        paths.setdefault(action.path, {})[action.method.lower()] = _action_operation(action)
    schemes = {"ApiKey": {"type": "apiKey", "in": "header", "name": "ApiKey"}}
    if extra:
        paths.update(extra.get("paths", {}))
        components.update(extra.get("schemas", {}))
        schemes.update(extra.get("securitySchemes", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Hotline API", "version": "1.0.0",
                 "description": "Incoming Call Policies, their escalation rules and the logs of every call, "
                                "in OneUptime's conventions; and the contact center's calls API "
                                "(/apps/api/v1/calls), in CCAI Platform's."},
        "servers": [{"url": "/"}],
        "security": [{"ApiKey": []}],
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": schemes},
    }
