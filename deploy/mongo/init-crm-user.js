// Runs once, when the MongoDB data volume is empty (docker-entrypoint-initdb.d), as the root
// user: creates the application's own user. Its password comes from CRM_MONGO_PASSWORD in
// compose.env, and MONGODB_URL there carries the same credentials.
const password = process.env.CRM_MONGO_PASSWORD;
if (!password) {
  throw new Error("CRM_MONGO_PASSWORD is not set in compose.env");
}
db.getSiblingDB("admin").createUser({
  user: process.env.CRM_MONGO_USER || "crm",
  pwd: password,
  // the system database and one database per company (crm_t_<id>), created at run time
  roles: [
    { role: "readWriteAnyDatabase", db: "admin" },
    { role: "dbAdminAnyDatabase", db: "admin" },
  ],
});
