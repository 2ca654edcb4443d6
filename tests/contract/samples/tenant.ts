// A frontend's use of a per-company document (GET /api/openapi/tenant.json of a company with a
// table `deals` of every column type: tests/contract/conftest.py), compiled like static.ts.
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Deal = components["schemas"]["Row_deals"];
type NewDeal = components["schemas"]["RowIn_deals"];

export async function sample(token: string): Promise<Deal[]> {
  const api = createClient<paths>({
    baseUrl: "http://127.0.0.1:8005",
    headers: { Authorization: `Bearer ${token}` },
  });
  const deal: NewDeal = { title: "First", amount: 5, stage: 2, active: true, due: "2025-08-01" };
  const created = await api.POST("/api/data/deals", { body: deal });
  if (created.error) {
    throw new Error(created.error.error.message);
  }
  const stage: 1 | 2 | null | undefined = created.data.stage;
  const title: string | null | undefined = created.data.title;
  void stage;
  void title;
  await api.PATCH("/api/data/deals/{row_id}", {
    params: { path: { row_id: created.data.id } },
    body: { stage: null },
  });
  const page = await api.GET("/api/data/deals", {
    params: { query: { filters: JSON.stringify([{ field: "stage", value: 2 }]) } },
  });
  return page.data?.items ?? [];
}
