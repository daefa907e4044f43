// The role rules of API.md §0, in one place: the page shows an action only to a key whose
// roles allow it, so no button answers 403.

export class Roles {
  constructor(roles) {
    // /v1/bootstrap lists the effective roles (admin comes with every other one).
    this.roles = new Set(roles);
  }

  has(role) {
    return this.roles.has(role);
  }

  get list() {
    return [...this.roles].sort();
  }

  canCancel() {
    return this.has("operator");
  }

  canReplay() {
    return this.has("operator");
  }

  canVerify() {
    return this.has("operator");
  }

  canAudit() {
    return this.has("auditor");
  }

  /** `required`-tier approvals need member; `admin`-tier ones need admin. */
  canResolve(tier) {
    return tier === "admin" ? this.has("admin") : this.has("member");
  }

  canManageConnectors() {
    return this.has("admin");
  }
}
