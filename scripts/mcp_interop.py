"""MCP interop: the official Python SDK (`mcp` from PyPI) against a running steward, unchanged.

For each way the SDK connects (pinned to 2026-07-28, the legacy initialize handshake, and its own `auto`
negotiation) it lists the tools, calls one, follows a call's progress, gets `isError` from a failing skill, reads an
execution resource, and cancels a long call by abandoning it; the cancel must reach the execution. It also checks
that a viewer's key sees no tools. Usage: mcp_interop.py URL ADMIN_TOKEN. Exits 1 on the first broken expectation.
"""

import json
import sys
import time
import urllib.request

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

url, admin_token = sys.argv[1], sys.argv[2]
failures = []


def check(condition, what):
    print(("  ok   " if condition else "  FAIL ") + what)
    if not condition:
        failures.append(what)


def rest(method, path, body=None, token=admin_token):
    request = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def client(key, mode):
    http = httpx2.AsyncClient(headers={"Authorization": "Bearer " + key}, timeout=httpx2.Timeout(60.0))
    return Client(streamable_http_client(url + "/mcp", http_client=http), mode=mode, cache=None)


def cancelled_count():
    page = rest("GET", "/api/v1/executions?origin=mcp&status=cancelled&limit=100")
    return len(page["items"])


async def exercise(key, mode):
    print(f"==> the Python SDK, mode={mode}")
    async with client(key, mode) as session:
        tools = await session.list_tools()
        names = [tool.name for tool in tools.tools]
        check("echo" in names and "steward_search_skills" in names, f"tools/list has echo and the built-ins ({len(names)} tools)")
        echo = next(tool for tool in tools.tools if tool.name == "echo")
        check(echo.input_schema.get("type") == "object", "a tool's inputSchema is an object schema")

        result = await session.call_tool("echo", {"mode": mode, "n": 1})
        check(not result.is_error and result.structured_content == {"mode": mode, "n": 1}, "tools/call echo returns its arguments")
        execution_id = (result.meta or {}).get("dev.steward/executionId")
        check(bool(execution_id), "the result names its execution")

        seen = []

        async def on_progress(progress, total, message):
            seen.append(progress)

        result = await session.call_tool("wait", {"seconds": 1.2}, progress_callback=on_progress)
        check(not result.is_error, "a call that takes a while succeeds")
        check(len(seen) > 0 and seen == sorted(seen), f"its progress arrives, rising ({seen})")

        failed = await session.call_tool("always-fails", {"message": "interop boom"})
        text = " ".join(getattr(block, "text", "") for block in failed.content)
        check(failed.is_error and "interop boom" in text, "a failing skill is isError with its message")

        read = await session.read_resource(f"steward://executions/{execution_id}")
        body = json.loads(read.contents[0].text)
        check(body["execution"]["id"] == execution_id and body["execution"]["status"] == "succeeded",
              "resources/read gives the execution")

        # The REST reads run in a thread: the client's event loop must stay free to send its cancel.
        before = await anyio.to_thread.run_sync(cancelled_count)
        with anyio.move_on_after(1.5):
            await session.call_tool("wait", {"seconds": 60})
        deadline = time.time() + 15
        while await anyio.to_thread.run_sync(cancelled_count) == before and time.time() < deadline:
            await anyio.sleep(0.2)
        check(await anyio.to_thread.run_sync(cancelled_count) > before, "abandoning a call cancels its execution")


async def main():
    key = rest("POST", "/api/v1/api-keys", {"name": "mcp interop", "scopes": ["skills:read", "skills:execute", "executions:read", "executions:write"]})["key"]
    for mode in ("2026-07-28", "legacy", "auto"):
        await exercise(key, mode)

    print("==> a viewer's key")
    stamp = str(int(time.time() * 1000))
    email = f"mcp-viewer-{stamp}@example.com"
    password = "Viewer-Password-42"
    request = urllib.request.Request(url + "/api/v1/auth/register", method="POST",
                                     data=json.dumps({"email": email, "username": "mcpviewer" + stamp[-6:], "password": password}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    login = urllib.request.Request(url + "/api/v1/auth/login", method="POST", data=json.dumps({"email": email, "password": password}).encode(),
                                   headers={"Content-Type": "application/json"})
    viewer_token = json.load(urllib.request.urlopen(login, timeout=30))["accessToken"]
    async with client(viewer_token, "2026-07-28") as session:
        tools = await session.list_tools()
        check(tools.tools == [], "a viewer sees no tools")


anyio.run(main)
if failures:
    print(f"mcp interop: {len(failures)} failed")
    sys.exit(1)
print("mcp interop: every check passed")
