# frozen_string_literal: true

# The dummy app's controllers: a signed-in user is what /test_sign_in put
# in the session (an admin, a tenant's own admin, or a plain user).
class ApplicationController < ActionController::Base
  CurrentUser = Struct.new(:role, :tenant_id, keyword_init: true) do
    def admin? = role == "admin"
    def tenant_admin? = role == "tenant_admin"
  end

  helper_method :current_user

  # A strict policy (no inline script or style), as a careful app would
  # have: the dashboard's pages must work under it.
  content_security_policy do |policy|
    policy.default_src :self
    policy.script_src :self
    policy.style_src :self
    policy.connect_src :self
  end

  def current_user
    role = session[:role]
    role && CurrentUser.new(role: role, tenant_id: session[:tenant_id])
  end
end
