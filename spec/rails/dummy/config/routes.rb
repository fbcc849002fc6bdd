# frozen_string_literal: true

Rails.application.routes.draw do
  mount TenantKit::Rails::Dashboard::Engine, at: "/admin/tenant_kit"
  # Test sign-in (spec/rails/dashboard_spec.rb): the dummy app has no accounts.
  get "/test_sign_in", to: "test_sessions#create"
end
