// A frontend's use of the static document (tests/contract/test_clients.py compiles it with
// `tsc --strict --noEmit` against the types openapi-typescript generates into ./api.d.ts).
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Filter = components["schemas"]["Filter"];
type Row = components["schemas"]["Row"];
type ErrorResponse = components["schemas"]["ErrorResponse"];

export async function sample(token: string): Promise<Row[]> {
  const api = createClient<paths>({
    baseUrl: "http://127.0.0.1:8005",
    headers: { Authorization: `Bearer ${token}` },
  });
  // a table: optional settings stay optional
  const table = await api.POST("/api/meta/tables", {
    body: {
      key: "deals",
      columns: [
        { key: "title", type: "string", required: true },
        { key: "amount", type: "integer" },
        { key: "stage", type: "select", options: [{ label: "New" }] },
      ],
    },
  });
  if (table.error) {
    const problem: ErrorResponse = table.error;
    const fields: (string | undefined)[] = (problem.error.details ?? []).map((d) => d.field);
    throw new Error(`${problem.error.code}: ${fields.join(", ")}`);
  }
  const created = await api.POST("/api/data/{table}", {
    params: { path: { table: table.data.key } },
    body: { title: "First", amount: 5, stage: 1 },
  });
  if (created.data) {
    const id: string = created.data.id;
    await api.PATCH("/api/data/{table}/{row_id}", {
      params: { path: { table: "deals", row_id: id } },
      body: { amount: null },
    });
  }
  const filter: Filter = [
    { field: "amount", op: "gt", value: 1 },
    { or: [{ field: "stage", value: 1 }, { field: "stage", op: "blank" }] },
  ];
  const page = await api.GET("/api/data/{table}", {
    params: { path: { table: "deals" }, query: { filters: JSON.stringify(filter), limit: 10 } },
  });
  if (page.error) {
    const message: string = page.error.error.message;
    throw new Error(message);
  }
  const total: number = page.data.total;
  const first = page.data.items[0];
  const createdAt: string | undefined = first?._created_at;
  void total;
  void createdAt;
  return page.data.items;
}
